"""Check a Ray cluster yaml before ``ray up`` / ``ray submit``: one line naming the problem.

    python pipelines/check_cluster.py pipelines/cluster.yaml && ray up pipelines/cluster.yaml

``ray up`` answers a yaml that does not parse, or does not match its schema, with a traceback from
inside Ray. This reads the file, parses it, validates it against the schema Ray itself ships
(``ray/autoscaler/ray-schema.json``) and checks that ``head_node_type`` names one of the
``available_node_types``. Exit 0 with one ``ok:`` line, or 2 with one ``error:`` line (file, line
and column where the yaml breaks; the field where the schema does).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

FAKE_PROVIDER_NOTE = ("provider fake_multinode: start it with RAY_FAKE_CLUSTER=1 ray start --head "
                      "--autoscaling-config=<this file> (ray up / submit / down cannot drive it; "
                      "docs/PIPELINE.md)")


class ClusterConfigError(ValueError):
    pass


def load(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as e:
        raise ClusterConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ClusterConfigError(f"{where}: not valid YAML ({what})") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path}: a cluster config is a mapping (cluster_name, "
                                 f"provider, ...), got {type(config).__name__}")
    return config


def validate(path: str, config: dict) -> None:
    import jsonschema
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        field = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ClusterConfigError(f"{path}: {field}: {e.message[:200]} (Ray's cluster "
                                 f"schema)") from None
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if types and head not in types:
        raise ClusterConfigError(f"{path}: head_node_type {head!r} is not one of "
                                 f"available_node_types {sorted(types)}")


def describe(path: str, config: dict) -> str:
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    workers = ", ".join(f"{name} (min {t.get('min_workers', 0)}, max {t.get('max_workers', '-')})"
                        for name, t in types.items() if name != head) or "none"
    line = (f"ok: {path}: cluster {config['cluster_name']!r}, provider "
            f"{config['provider'].get('type')}, head {head}, workers {workers}")
    if config["provider"].get("type") == "fake_multinode":
        line += f"; {FAKE_PROVIDER_NOTE}"
    return line


def check(path: str) -> str:
    config = load(path)
    validate(path, config)
    return describe(path, config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/check_cluster.py",
                                description="Check a Ray cluster yaml before `ray up`: one line, "
                                            "exit 0 (ok) or 2 (what is wrong).")
    p.add_argument("cluster_yaml", help="e.g. pipelines/cluster.yaml")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(check(args.cluster_yaml))
    except ClusterConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
