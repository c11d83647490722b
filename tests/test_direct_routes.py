"""Routes answered directly (web.answer_directly): the same answers as Flask gives, byte for byte."""

import pytest
from flask import Flask, Response

from queuing_system.web import answer_directly, json_app


def app_with_routes(direct: bool) -> Flask:
    app = json_app(__name__)

    @app.get("/items")
    def items():
        return [{"id": 1, "name": "Valise été"}, {"id": 2}]

    @app.get("/items/<item_id>")
    def item(item_id: str):
        if item_id == "boom":
            raise ValueError("a bug")
        if item_id == "busy":
            return {"status": "try again", "id": item_id}, 503, {"Retry-After": "1"}
        if item_id == "gone":
            return {"status": "gone"}, 410
        if item_id == "response":
            return Response('{"status":"a Response"}', mimetype="application/json")  # made without a context
        return {"id": item_id}

    if direct:
        answer_directly(app, "items", "item")
    return app


PATHS = [
    "/items",
    "/items/",
    "/items/7",
    "/items/7/",
    "/items//7",
    "/items/%C3%A9",
    "/items/7?x=1",
    "/items/boom",
    "/items/busy",
    "/items/gone",
    "/items/response",
    "/nowhere",
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
@pytest.mark.parametrize("path", PATHS)
def test_the_same_answer_as_flask(path: str, method: str) -> None:
    flask_alone = app_with_routes(direct=False).test_client().open(path, method=method)
    direct = app_with_routes(direct=True).test_client().open(path, method=method)
    assert (direct.status, sorted(direct.headers.items()), direct.data) == (
        flask_alone.status,
        sorted(flask_alone.headers.items()),
        flask_alone.data,
    )


def test_a_route_that_cannot_be_answered_directly_is_refused_when_the_app_is_built() -> None:
    app = json_app(__name__)

    @app.get("/a/<int:n>/b")
    def typed(n: int):
        return {"n": n}

    with pytest.raises(ValueError, match="not a route answered directly"):
        answer_directly(app, "typed")
    with pytest.raises(ValueError, match="no GET route"):
        answer_directly(app, "nothing")
