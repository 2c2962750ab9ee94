"""Operations subcommands of ``riskmon``: ``dashboards export|push`` (and ``alerts``).

``stream_app.cli.build_parser`` calls :func:`register`. Each command group adds itself in
:func:`register` with its own ``_add_<group>`` function, so groups stay independent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]

_DASHBOARDS_EPILOG = """\
examples:
  riskmon dashboards export --out ops/grafana/dashboards
  riskmon dashboards push --url http://localhost:3000          # token or user/password from env
  RISKMON_GRAFANA_TOKEN=glsa_... riskmon dashboards push --url https://grafana.example.com
  riskmon dashboards push --from-dir my-dashboards --datasource-uid P1809F7CD0C75ACF3

environment:
  RISKMON_GRAFANA_URL        default of --url (http://localhost:3000)
  RISKMON_GRAFANA_TOKEN      service-account token (wins over basic auth)
  RISKMON_GRAFANA_USER       basic auth user
  RISKMON_GRAFANA_PASSWORD   basic auth password
"""


def _add_dashboards(sub: argparse._SubParsersAction) -> None:
    from stream_app.dashboards import DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID

    p = sub.add_parser(
        "dashboards",
        help="export the Grafana dashboards as JSON or push them to a Grafana",
        description=(
            "The riskmon Grafana dashboards (portfolio risk, model calibration, pipeline "
            "health) as code. 'export' writes their JSON; 'push' creates or overwrites them "
            "in a Grafana by uid, inside a folder (created when missing)."
        ),
        epilog=_DASHBOARDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="dashboards_command", metavar="ACTION")
    actions.required = True

    ex = actions.add_parser("export", help="write the dashboards' JSON files")
    ex.add_argument(
        "--out",
        metavar="DIR",
        default="dashboards",
        help="output folder (default: ./dashboards)",
    )
    ex.add_argument(
        "--datasource-uid",
        default=DATASOURCE_UID,
        help=f"uid of the Prometheus datasource the panels read (default {DATASOURCE_UID})",
    )
    ex.set_defaults(func=cmd_dashboards_export)

    push = actions.add_parser(
        "push",
        help="create or overwrite the dashboards in Grafana (idempotent)",
        epilog=_DASHBOARDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument(
        "--url", help="Grafana base URL (default: $RISKMON_GRAFANA_URL or http://localhost:3000)"
    )
    push.add_argument(
        "--folder", default=FOLDER_TITLE, help=f"folder title (default {FOLDER_TITLE})"
    )
    push.add_argument("--folder-uid", default=FOLDER_UID, help=f"folder uid (default {FOLDER_UID})")
    push.add_argument(
        "--datasource-uid",
        default=DATASOURCE_UID,
        help=f"uid of the Prometheus datasource in that Grafana (default {DATASOURCE_UID})",
    )
    push.add_argument(
        "--from-dir",
        metavar="DIR",
        help="push the *.json dashboards of DIR instead of the built-in ones",
    )
    push.add_argument("--timeout", type=float, help="seconds per HTTP request (default 10)")
    push.set_defaults(func=cmd_dashboards_push)


def cmd_dashboards_export(args: argparse.Namespace) -> int:
    from stream_app.dashboards import export_dashboards

    for path in export_dashboards(Path(args.out), datasource_uid=args.datasource_uid):
        print(path)
    return 0


def cmd_dashboards_push(args: argparse.Namespace) -> int:
    from stream_app.dashboards import GrafanaSettings, load_dashboards, push_dashboards

    overrides: dict[str, object] = {}
    if args.url:
        overrides["url"] = args.url
    if args.timeout is not None:
        overrides["timeout"] = args.timeout
    settings = GrafanaSettings(**overrides)  # type: ignore[arg-type]
    boards = load_dashboards(args.from_dir) if args.from_dir else None
    results = push_dashboards(
        settings,
        dashboards=boards,
        folder_uid=args.folder_uid,
        folder_title=args.folder,
        datasource_uid=args.datasource_uid,
    )
    base = settings.url.rstrip("/")
    for r in results:
        where = f"{base}{r.url}" if r.url.startswith("/") else r.url
        print(f"{r.status:<9} {r.uid:<28} {r.title}  {where}".rstrip())
    print(f"{len(results)} dashboards in folder {args.folder!r} of {base}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the operations subcommands to the ``riskmon`` parser."""
    _add_dashboards(sub)
