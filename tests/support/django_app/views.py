from __future__ import annotations

import logging

from django.contrib.auth import get_user_model, login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from shipper.context import current_context

_lib = logging.getLogger("thirdparty.db")
VISA = "5555 5555 5555 4444"


def _context_body(request: HttpRequest) -> JsonResponse:
    ctx = current_context()
    return JsonResponse({
        "request_id": request.request_id,
        "context_trace_id": ctx.trace_id if ctx else None,
        "context_actor": ctx.actor if ctx else None,
        "context_actor_id": ctx.actor_id if ctx else None,
    })


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    _lib.info("loading item %d", item_id)
    return _context_body(request)


async def async_item(request: HttpRequest, item_id: int) -> HttpResponse:
    _lib.info("loading item %d (async)", item_id)
    return _context_body(request)


def status(request: HttpRequest, code: int) -> HttpResponse:
    return HttpResponse("s", status=code)


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing")


def fail(request: HttpRequest) -> HttpResponse:
    _lib.warning("about to fail")
    raise RuntimeError("kaboom password=hunter2")


def login_view(request: HttpRequest, username: str) -> HttpResponse:
    user = get_user_model().objects.get(username=username)
    login(request, user)
    return HttpResponse("in")


def leak(request: HttpRequest) -> HttpResponse:
    _lib.warning("charging card %s", VISA, extra={"metadata": {
        "form": request.POST.dict(),
        "headers": dict(request.headers),
    }})
    return HttpResponse("ok")
