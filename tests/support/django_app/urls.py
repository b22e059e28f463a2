from __future__ import annotations

from django.urls import path

from tests.support.django_app import views

urlpatterns = [
    path("items/<int:item_id>", views.item),
    path("async-items/<int:item_id>", views.async_item),
    path("status/<int:code>", views.status),
    path("missing", views.missing),
    path("fail", views.fail),
    path("login/<str:username>", views.login_view),
    path("leak", views.leak),
]
