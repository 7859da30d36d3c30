"""Route finders of the ASGI middleware: the matched route template and
endpoint of a request, read from what the framework left (Starlette/FastAPI's
``scope["route"]``) or matched again (Django's URL resolver, a werkzeug
``url_map`` such as Quart's). Duck-typed: no framework is imported.
"""

from __future__ import annotations

import sys
import typing as t

__all__ = ["RouteFinder", "route_finder"]

#: ``(asgi_scope, root_path, method, path) -> (route template, endpoint)``.
RouteFinder: t.TypeAlias = (
    "t.Callable[[dict[str, t.Any], str, str, str], tuple[str | None, str | None]]"
)

#: Route objects seen in ``scope["route"]``, by id: (route, template, name,
#: is_mount). The route is kept so that its id cannot be reused.
_route_info: dict[int, tuple[t.Any, str | None, str | None, bool]] = {}


def _describe(route: t.Any) -> tuple[t.Any, str | None, str | None, bool]:
    template = getattr(route, "path", None)
    name = getattr(route, "name", None)
    info = (
        route,
        template if isinstance(template, str) else None,
        name if isinstance(name, str) else None,
        hasattr(route, "routes"),  # a Mount (or Host)
    )
    if len(_route_info) < 4096:
        _route_info[id(route)] = info
    return info


def _scope_route(
    inner: dict[str, t.Any], root_path: str, method: str, path: str
) -> tuple[str | None, str | None]:
    """Starlette/FastAPI: the router leaves the matched route in ``scope["route"]``."""
    route = inner.get("route")
    if route is None:
        return _endpoint_route(inner)
    info = _route_info.get(id(route))
    if info is None or info[0] is not route:
        info = _describe(route)
    _, template, endpoint, is_mount = info
    if template is None:
        return None, endpoint
    if is_mount:
        # A Mount answering itself (static files, a plain ASGI sub-app).
        return template.rstrip("/") + "/{path:path}", endpoint
    mounted = inner.get("root_path") or ""
    if mounted != root_path and mounted.startswith(root_path):
        # Inside a mounted sub-app: the mount's part of the path comes first.
        template = mounted[len(root_path) :].rstrip("/") + template
    return template, endpoint


#: Starlette before ``scope["route"]``: (router, endpoint) by their ids ->
#: (router, endpoint, template, name); both kept so that no id is reused.
_endpoint_info: dict[tuple[int, int], tuple[t.Any, t.Any, str | None, str | None]] = {}


def _endpoint_route(inner: dict[str, t.Any]) -> tuple[str | None, str | None]:
    """Starlette releases without ``scope["route"]`` (before 1.x): the router
    leaves the endpoint it matched in ``scope["endpoint"]`` and itself in
    ``scope["router"]``; the route is the one of its routes (searched through
    mounts) with that endpoint."""
    endpoint = inner.get("endpoint")
    router = inner.get("router")
    if endpoint is None or router is None:
        return None, None
    info = _endpoint_info.get((id(router), id(endpoint)))
    if info is None or info[0] is not router or info[1] is not endpoint:
        found = _search(getattr(router, "routes", None) or (), endpoint, "", 0)
        info = (router, endpoint, *(found or (None, None)))
        if len(_endpoint_info) < 4096:
            _endpoint_info[(id(router), id(endpoint))] = info
    return info[2], info[3]


def _search(
    routes: t.Iterable[t.Any], endpoint: t.Any, prefix: str, depth: int
) -> tuple[str | None, str | None] | None:
    """The template (under ``prefix``) and name of the first route in
    ``routes`` serving ``endpoint``; mounts are searched a few levels deep."""
    for route in routes:
        path = getattr(route, "path", None)
        name = getattr(route, "name", None)
        name = name if isinstance(name, str) else None
        if not isinstance(path, str):
            continue
        sub = getattr(route, "routes", None)
        if sub is None:
            if getattr(route, "endpoint", None) is endpoint:
                return prefix + path, name
            continue
        if getattr(route, "app", None) is endpoint:
            # A Mount answering itself (static files, a plain ASGI sub-app).
            return prefix + path.rstrip("/") + "/{path:path}", name
        if depth < 8 and sub:
            found = _search(sub, endpoint, prefix + path.rstrip("/"), depth + 1)
            if found is not None:
                return found
    return None


def route_finder(app: t.Any) -> RouteFinder:
    """Pick how route templates are found for ``app`` (duck-typed, no imports)."""
    target = getattr(app, "__self__", app)  # a bound method like quart_app.asgi_app
    module = type(target).__module__ or ""
    if module.startswith("django."):
        return _with_fallback(_django_route)
    url_map = getattr(target, "url_map", None)
    if url_map is not None and callable(getattr(url_map, "bind", None)):
        return _with_fallback(_werkzeug_route(url_map))
    return _scope_route


def _with_fallback(finder: RouteFinder) -> RouteFinder:
    def find(
        inner: dict[str, t.Any], root_path: str, method: str, path: str
    ) -> tuple[str | None, str | None]:
        if "route" in inner:
            return _scope_route(inner, root_path, method, path)
        return finder(inner, root_path, method, path)

    return find


def _relative(path: str, root_path: str) -> str:
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _django_route(
    inner: dict[str, t.Any], root_path: str, method: str, path: str
) -> tuple[str | None, str | None]:
    """Django: resolve the path with the URLconf Django itself uses."""
    urls = sys.modules.get("django.urls")
    if urls is None:
        return None, None
    try:
        match = urls.resolve(_relative(path, root_path))
    except Exception:  # Resolver404 and friends: no route
        return None, None
    route = getattr(match, "route", None)
    view_name = getattr(match, "view_name", None)
    return (
        "/" + route.lstrip("^/") if isinstance(route, str) else None,
        view_name if isinstance(view_name, str) else None,
    )


def _werkzeug_route(url_map: t.Any) -> RouteFinder:
    """Quart (and other werkzeug-routed ASGI apps): match against ``url_map``."""

    def find(
        inner: dict[str, t.Any], root_path: str, method: str, path: str
    ) -> tuple[str | None, str | None]:
        try:
            adapter = url_map.bind("localhost")
            rule, _ = adapter.match(
                _relative(path, root_path),
                method=method,
                return_rule=True,
                websocket=inner.get("type") == "websocket",
            )
        except Exception:  # 404, 405, redirects: no route
            return None, None
        return str(rule.rule), str(rule.endpoint)

    return find
