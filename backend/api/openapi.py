"""The OpenAPI document, with its examples intact."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from pydantic import BaseModel

from backend.api.schemas import DeferRequest, ErrorBody, FieldError, Health, TaskInfo

#: Models whose schema carries examples (FastAPI would publish them without their nulls).
EXAMPLE_MODELS: tuple[type[BaseModel], ...] = (
    DeferRequest,
    ErrorBody,
    FieldError,
    Health,
    TaskInfo,
)


class TaskhubAPI(FastAPI):
    """FastAPI, with the nulls of its OpenAPI examples kept.

    FastAPI drops every null from the document it generates, examples included, which makes
    an example of a nullable required field (`"lock": null`) invalid; they are put back here.
    """

    documented_routers: tuple[APIRouter, ...] = ()

    def include_routers(self, *routers: APIRouter) -> None:
        for router in routers:
            self.include_router(router)
        self.documented_routers += routers

    def openapi(self) -> dict[str, Any]:
        document = super().openapi()
        operations = document.get("paths", {})
        for route in (route for router in self.documented_routers for route in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                published = operations[route.path_format][method.lower()]["responses"]
                for code, declared in route.responses.items():
                    for media_type, content in declared.get("content", {}).items():
                        if "examples" in content:
                            media = published[str(code)]["content"][media_type]
                            media["examples"] = jsonable_encoder(content["examples"])
        components = document.get("components", {}).get("schemas", {})
        for model in EXAMPLE_MODELS:
            examples = model.model_json_schema().get("examples")
            if model.__name__ in components and examples is not None:
                components[model.__name__]["examples"] = jsonable_encoder(examples)
        return document
