"""Fixtures for the SageMaker launcher tests: an in-process moto server on 127.0.0.1 and a network guard."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

pytest.importorskip("moto.server", reason="moto[server] is needed for the SageMaker launcher tests")
pytest.importorskip("sagemaker.train", reason="sagemaker-train is needed for the SageMaker launcher tests")

from sagemaker_emulator import BUCKET, LOCAL_HOSTS, REGION, Aws  # noqa: E402


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of a moto server speaking the S3, STS and SageMaker APIs, in this process."""
    from moto.server import ThreadedMotoServer

    # The server logs every request; the tests look at what was stored instead.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def no_remote_network(monkeypatch):
    """Fail any connection or name lookup for a host other than 127.0.0.1, and assert none was tried."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def host_of(address):
        return address[0] if isinstance(address, tuple) else address

    def allowed(host) -> bool:
        return isinstance(host, str) and (host in LOCAL_HOSTS or host.startswith("/"))

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not allowed(host_of(address)):
            attempts.append(address)
            raise ConnectionRefusedError(f"test network guard: connection to {address} refused")
        return real_connect(sock, address)

    def guarded_connect_ex(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not allowed(host_of(address)):
            attempts.append(address)
            return 111
        return real_connect_ex(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not allowed(host if isinstance(host, str) else host.decode()):
            attempts.append(host)
            raise socket.gaierror(f"test network guard: lookup of {host} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert not attempts, f"something tried to reach a host other than 127.0.0.1: {attempts}"


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path):
    """Dummy credentials and region pointed at the moto server, fresh state, request capture."""
    import requests

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    environment = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        # Role validation calls IAM SimulatePrincipalPolicy, which moto does not implement.
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    state = Aws(endpoint=moto_endpoint)
    state.client("s3").create_bucket(Bucket=BUCKET)

    from launchers import sagemaker_aws

    real_open = sagemaker_aws.open_boto_session

    def open_and_capture(settings):
        boto_session = real_open(settings)

        def capture(params, **_):
            state.created_jobs.append(json.loads(json.dumps(params, default=str)))

        def after_create(**_):
            for callback in state.on_create:
                callback(state.created_jobs[-1]["TrainingJobName"])

        boto_session.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
        boto_session.events.register("after-call.sagemaker.CreateTrainingJob", after_create)
        return boto_session

    monkeypatch.setattr(sagemaker_aws, "open_boto_session", open_and_capture)
    return state
