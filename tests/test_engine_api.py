"""The shipped Engine API data (powerstrip/wire/engine_api.json) and its accessors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from powerstrip.wire import engine_api

REPO = Path(__file__).resolve().parent.parent
SWAGGER = REPO.parent / "shared" / "engine-api"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_engine_api", REPO / "tools" / "gen_engine_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ShippedData(TestCase):
    def test_shipped_file_is_what_the_script_generates(self) -> None:
        if not (SWAGGER / "v1.41.yaml").exists():
            raise SkipTest(f"no swagger at {SWAGGER} (CI has shared/ beside the repository)")
        gen = _generator()
        shipped = (REPO / "powerstrip" / "wire" / "engine_api.json").read_text(encoding="utf-8")
        self.assertEqual(
            shipped,
            gen.render(gen.generate(SWAGGER)),
            "powerstrip/wire/engine_api.json is stale: run python3 tools/gen_engine_api.py",
        )

    def test_versions_and_routes(self) -> None:
        self.assertEqual(engine_api.versions(), ("1.41", "1.50", "1.56"))
        routes = engine_api.routes()
        self.assertEqual(list(routes), sorted(routes))
        for route in (
            ("POST", "/containers/create"),
            ("POST", "/containers/{id}/start"),
            ("POST", "/containers/{id}/exec"),
            ("POST", "/build"),
            ("GET", "/_ping"),
            ("POST", "/services/create"),
            ("DELETE", "/containers/{id}"),
        ):
            self.assertIn(route, routes)

    def test_route_for(self) -> None:
        self.assertEqual(engine_api.route_for("POST", "/containers/abc/start"), "/containers/{id}/start")
        self.assertEqual(engine_api.route_for("POST", "/images/library/busybox/push"), "/images/{name}/push")
        self.assertEqual(engine_api.route_for("GET", "/images/a/b/json"), "/images/{name}/json")
        self.assertIsNone(engine_api.route_for("POST", "/no/such/route"))
        self.assertIsNone(engine_api.route_for("GET", "/containers/create"))

    def test_known_keys(self) -> None:
        create = engine_api.body_schema("POST", "/containers/create")
        host = create.field("HostConfig")
        self.assertIs(host, engine_api.type_schema("HostConfig"))
        for key in ("Privileged", "CapAdd", "Binds", "Devices", "PidMode", "NetworkMode", "Mounts", "Memory"):
            self.assertIn(key, host.keys)
        self.assertEqual(host.canonical("privileged"), "Privileged")
        self.assertEqual(host.canonical("CAPADD"), "CapAdd")
        self.assertEqual(create.canonical("Ho\u017ftConfig"), "HostConfig")  # ſ folds to s
        self.assertEqual(host.canonical("\u212aernelMemory"), "KernelMemory")  # Kelvin sign folds to k
        self.assertIsNone(host.canonical("Privıleged"))  # dotless ı is not i to Go
        self.assertTrue(create.field("Labels").is_map)
        self.assertEqual(host.field("Devices").items.canonical("pathonhost"), "PathOnHost")
        exec_ = engine_api.body_schema("POST", "/containers/{id}/exec")
        self.assertEqual(exec_.canonical("privileged"), "Privileged")
        spec = engine_api.body_schema("POST", "/services/create").field("TaskTemplate").field("ContainerSpec")
        self.assertIn("CapabilityAdd", spec.keys)
        self.assertIn("Privileges", spec.keys)
        self.assertEqual(engine_api.body_schema("POST", "/plugins/pull").type, "array")
        self.assertIsNone(engine_api.body_schema("POST", "/build"))  # a tar stream, not JSON
        self.assertIn(("PUT", "/volumes/{name}"), engine_api.json_body_routes())
