"""Operators' routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from quart import Blueprint, Response, jsonify, request
from quart_schema import document_response, tag_blueprint

from quart_rooms.api.openapi import errors, public
from quart_rooms.api.schemas import Health, Metrics, NotReady, Ready
from quart_rooms.auth.http import services
from quart_rooms.errors import NotFound
from quart_rooms.proxy import in_networks, parse_networks
from quart_rooms.storage.db import ping
from quart_rooms.tasks import within

blueprint = Blueprint("health", __name__)
tag_blueprint(blueprint, ["operations"])
log = logging.getLogger(__name__)
PING_TIMEOUT = 5.0  # seconds the database has to answer a readiness probe


@blueprint.get("/healthz")
@public
@document_response(Health)
async def healthz() -> Response:
    """200 while the process runs."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
@public
@document_response(NotReady, 503)
@document_response(Ready)
async def readyz() -> Response:
    """200 when storage (and the broker, if configured) answer; 503 otherwise."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        await within(PING_TIMEOUT, ping(svc.db.engine))  # a hung database is not ready, not a hung probe
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        log.warning("readiness: database: %s", exc)
        checks["database"] = "unavailable"
    broker = svc.broker_ping
    if broker is not None:
        try:
            await broker()
            checks["broker"] = "ok"
        except Exception as exc:
            log.warning("readiness: broker: %s", exc)
            checks["broker"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify({"status": "ok" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


LOOPBACK = ["127.0.0.1/32", "::1/128"]


@blueprint.get("/metrics")
@public
@errors(404)
@document_response(Metrics)
async def metrics() -> Response:
    """The Prometheus text format of the server's metrics, to the addresses in `metrics_allow` only."""
    svc = services()
    if not in_networks(request.remote_addr, parse_networks(svc.settings.metrics_allow or LOOPBACK)):
        raise NotFound("No such page.")
    return Response(svc.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
