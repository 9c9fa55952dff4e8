"""The Flask app and a local S3 (moto's server) beside taskhub, for ``taskhub up --demo``:
backups are copied to the bucket ``k9-offsite`` under ``nightly/``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from backend.examples.fieldops.settings import FieldopsSettings
from backend.examples.fieldops.web import create_app

BUCKET = "k9-offsite"
#: moto accepts any key pair; a real bucket's come from the operator's secrets.
DEMO_KEY_ID = "demo-key-id"
DEMO_SECRET = "demo-secret"


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 on a free local port, with the demo's bucket; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=DEMO_KEY_ID,
            aws_secret_access_key=DEMO_SECRET,
        ).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def serve_demo(database_url: str, data_dir: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """The S3 stand-in and the Flask app (on free local ports) until the block ends; yields
    the environment that points the workers at them and the lines to print."""
    with local_s3() as s3_url:
        env = {
            "TASKHUB_FIELDOPS_OFFSITE_TARGET": f"s3://{BUCKET}/nightly",
            "TASKHUB_FIELDOPS_S3_ENDPOINT_URL": s3_url,
            "TASKHUB_FIELDOPS_S3_ACCESS_KEY_ID": DEMO_KEY_ID,
            "TASKHUB_FIELDOPS_S3_SECRET_ACCESS_KEY": DEMO_SECRET,
        }
        flask_app = create_app(FieldopsSettings(), database_url=database_url, data_dir=data_dir)
        server = make_server("127.0.0.1", 0, flask_app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="fieldops-flask", daemon=True)
        thread.start()
        try:
            yield (
                env,
                [
                    f"  demo field operations (Flask): http://127.0.0.1:{server.server_port}",
                    f"  demo S3 (off-site backups): {s3_url}/{BUCKET}",
                ],
            )
        finally:
            server.shutdown()
            thread.join(timeout=10)
            flask_app.extensions["fieldops"].engine.dispose()
