"""Flask: the WSGI middleware plus Flask's user and matched route, in one call::

    import flask_login
    from shipper.integrations.flask import init_app

    init_app(app, get_user=lambda: flask_login.current_user, slow_request_ms=500)

``get_user()`` is called in Flask's request context (after routing, before your view) and may
return None, ``(actor, actor_id)``, an actor name, or a user object with ``is_authenticated``
(Flask-Login's ``current_user``: anonymous → GUEST, authenticated → USER with ``get_id()``).
The route template (``/items/<int:item_id>``) is logged as ``metadata.route``. Every other
keyword goes to :class:`~shipper.integrations.wsgi.ShipperWSGIMiddleware`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask

from shipper.context import bind_context
from shipper.integrations._common import report, user_result
from shipper.integrations.wsgi import ENVIRON_ROUTE, ShipperWSGIMiddleware

__all__ = ["init_app"]


def init_app(
    app: flask.Flask,
    *,
    get_user: Callable[[], Any] | None = None,
    **options: Any,
) -> ShipperWSGIMiddleware:
    """Wrap ``app.wsgi_app`` in :class:`ShipperWSGIMiddleware` and register a
    ``before_request`` hook that binds the user and records the route. Returns the middleware
    (also kept as ``app.extensions["shipper"]``). Calling it twice on one app raises."""
    if not isinstance(app, flask.Flask):
        raise TypeError(f"app: expected a Flask application, got {app!r}")
    if "shipper" in app.extensions:
        raise RuntimeError("init_app: shipper is already set up on this Flask app")
    if get_user is not None and not callable(get_user):
        raise TypeError(f"get_user: expected a callable taking no arguments, got {get_user!r}")
    middleware = ShipperWSGIMiddleware(app.wsgi_app, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.extensions["shipper"] = middleware

    def _shipper_before_request() -> None:
        request = flask.request
        rule = request.url_rule
        if rule is not None:
            request.environ[ENVIRON_ROUTE] = rule.rule
        if get_user is None:
            return
        try:
            user = user_result(get_user(), "get_user")
        except Exception as exc:
            report("get_user", f"{type(exc).__name__}: {exc} (requests go on without a user)")
            return
        if user is not None:
            # no reset here: the middleware resets the whole request context when Flask returns
            bind_context(actor=user[0], actor_id=user[1])

    app.before_request(_shipper_before_request)
    return middleware
