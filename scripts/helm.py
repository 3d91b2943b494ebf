#!/usr/bin/env python3
"""Helm's own engine (PyPI helm-python-sdk, module helm_python: Helm v4's Go
SDK as a shared library), for the chart's tests and packaging; no `helm`
binary is needed. Run it with the virtualenv's python that
`scripts/package-chart.sh --install` prepares (`--python` prints it).

  helm.py render CHART [--values JSON] [--name N] [--namespace NS] [--kube-version V]
      prints {"template path": "manifest"} as JSON (NOTES.txt included)
  helm.py lint CHART [--values JSON] [--kube-version V]
      prints the strict lint report as JSON
  helm.py package CHART --destination DIR [--version V] [--app-version V]
      packages the .tgz (version and appVersion default to Cargo.toml's
      package version) and prints {"archive": path, "metadata": Chart.yaml
      read back from the archive}

A refused value (values.schema.json) or a template error exits 2 with
Helm's message on stderr; anything else unexpected exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib

import helm_python as helm
from helm_python import _native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crate_version() -> str:
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["package"]["version"]


def render(args: argparse.Namespace) -> object:
    values = json.loads(args.values)
    opts: dict[str, object] = {
        "name": args.name,
        "namespace": args.namespace,
        "is_install": True,
    }
    # Chart.render() has no kube_version; the library's render options do
    # (what `helm install` reads from the API server, and `helm template
    # --kube-version` sets), so the capabilities are passed through as they.
    if args.kube_version:
        opts["kube_version"] = args.kube_version
    with helm.Chart.load(args.chart) as chart:
        rendered = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values), json.dumps(opts)
        )
    return json.loads(rendered)


def lint(args: argparse.Namespace) -> object:
    return helm.lint(
        args.chart,
        json.loads(args.values),
        strict=True,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )


def package(args: argparse.Namespace) -> object:
    version = args.version or crate_version()
    os.makedirs(args.destination, exist_ok=True)
    archive = helm.package(
        args.chart,
        destination=args.destination,
        version=version,
        app_version=args.app_version or version,
    )
    with helm.Chart.load(archive) as chart:
        metadata = chart.metadata
    return {"archive": archive, "metadata": metadata}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("render", "lint"):
        s = sub.add_parser(name)
        s.add_argument("chart")
        s.add_argument("--values", default="{}", help="values as a JSON object")
        s.add_argument("--namespace", default="pushroll")
        s.add_argument("--kube-version", default=None, help="e.g. v1.20.2")
        if name == "render":
            s.add_argument("--name", default="pushroll", help="release name")
    s = sub.add_parser("package")
    s.add_argument("chart")
    s.add_argument("--destination", required=True)
    s.add_argument("--version", default=None)
    s.add_argument("--app-version", default=None)
    args = p.parse_args()
    try:
        out = {"render": render, "lint": lint, "package": package}[args.command](args)
    except (helm.HelmValuesError, helm.HelmRenderError, helm.HelmChartInvalidError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
