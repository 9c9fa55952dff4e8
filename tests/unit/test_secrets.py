"""Secret arguments: found wherever they sit in a model, masked for show, stored in clear."""

from __future__ import annotations

from pydantic import BaseModel, SecretBytes, SecretStr

from backend.declare.registry import TaskBlueprint
from backend.declare.secrets import MASK, mask, reveal, secret_paths


class Login(BaseModel):
    user: str
    password: SecretStr


class Request(BaseModel):
    token: SecretStr | None = None
    key: SecretBytes
    login: Login
    backups: list[Login] = []
    by_site: dict[str, Login] = {}
    note: str = ""


def test_secret_paths_reach_nested_models_lists_and_dicts() -> None:
    assert set(secret_paths(Request)) == {
        ("token",),
        ("key",),
        ("login", "password"),
        ("backups", "*", "password"),
        ("by_site", "*", "password"),
    }
    assert secret_paths(Login) == (("password",),)


def test_mask_replaces_secrets_and_nothing_else() -> None:
    args = {
        "token": "t",
        "key": "k",
        "login": {"user": "ann", "password": "p"},
        "backups": [{"user": "bob", "password": "q"}],
        "by_site": {"riyadh": {"user": "cy", "password": "r"}},
        "note": "hello",
    }
    assert mask(Request, args) == {
        "token": MASK,
        "key": MASK,
        "login": {"user": "ann", "password": MASK},
        "backups": [{"user": "bob", "password": MASK}],
        "by_site": {"riyadh": {"user": "cy", "password": MASK}},
        "note": "hello",
    }
    assert args["login"] == {"user": "ann", "password": "p"}, "the original is untouched"
    assert mask(Request, {"token": None, "key": "k"})["token"] is None


def test_deferred_args_keep_the_real_secret_and_show_the_mask() -> None:
    blueprint = TaskBlueprint()

    @blueprint.task(name="s.login")
    def login(args: Login) -> None: ...

    stored = login.validate_args({"user": "ann", "password": "p4ss"})
    assert stored == {"user": "ann", "password": "p4ss"}
    assert login.mask(stored) == {"user": "ann", "password": MASK}
    assert reveal({"a": [SecretStr("x"), SecretBytes(b"y")]}) == {"a": ["x", "y"]}
