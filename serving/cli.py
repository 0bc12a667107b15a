"""The ``serving`` command (also ``python -m serving``).

``serving serve [--flag VALUE ...]`` starts the server. Every flag has an environment
variable (``serving serve --help`` lists both); flags win over the environment, which wins
over the defaults. Its exit statuses are :data:`EXIT_STATUSES`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from .settings import SETTINGS, Setting, Settings, SettingsError
from .startup import CannotListen, check_port, check_settings

DISTRIBUTION = "sagemaker-onnx-serving"

#: What ``serving serve``'s exit status means (gunicorn's own, but for 2).
EXIT_STATUSES = {
    0: "stopped by SIGTERM or SIGINT",
    1: "could not start, e.g. the port is taken",
    2: "invalid settings",
    3: "a worker could not load the model (the reason is logged, on one line)",
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="serving", description="Serve a model over SageMaker's /ping and /invocations."
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = root.add_subparsers(dest="command", required=True)
    exit_statuses = "; ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items())
    serve = commands.add_parser(
        "serve",
        help="start the server",
        description="Start the server. Each flag can also be set by its environment variable.",
        epilog=f"exit status: {exit_statuses}",
    )
    _add_settings(serve, SETTINGS)
    _add_endpoint(commands)
    return root


def _add_settings(parser: argparse.ArgumentParser, table: tuple[Setting, ...]) -> None:
    """A flag for each setting of ``table``, its variable and default in its help."""
    for setting in table:
        help_text = f"{setting.help} [env {setting.env}; default {setting.default_text}]"
        if setting.is_switch:
            switch = argparse.BooleanOptionalAction
            parser.add_argument(setting.flag, dest=setting.name, action=switch, help=help_text)
        else:
            parser.add_argument(
                setting.flag, dest=setting.name, metavar=setting.metavar, help=help_text
            )


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _add_endpoint(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .endpoint.main import EXIT_STATUSES as ENDPOINT_EXIT_STATUSES
    from .endpoint.settings import ENDPOINT_SETTINGS

    exit_statuses = "; ".join(f"{code} {text}" for code, text in ENDPOINT_EXIT_STATUSES.items())
    endpoint = commands.add_parser(
        "endpoint",
        help="serve SageMaker's InvokeEndpoint API in front of containers",
        description="Serve the runtime API's InvokeEndpoint for endpoint NAME (boto3's "
        "invoke_endpoint with endpoint_url=http://127.0.0.1:8090), in front of a "
        "`serving serve` it starts for --model-dir, or of a running container "
        "(--container-url); or for the endpoints and variants of a --config file. "
        "Each flag can also be set by its environment variable.",
        epilog=f"exit status: {exit_statuses}",
    )
    endpoint.add_argument("endpoint_name", nargs="?", metavar="NAME", help="endpoint name")
    _add_settings(endpoint, ENDPOINT_SETTINGS)


def _endpoint(arguments: dict[str, object]) -> int:
    from .endpoint.config import endpoints
    from .endpoint.main import run
    from .endpoint.settings import EndpointSettings

    name = arguments.pop("endpoint_name")
    flags = {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in arguments.items()
        if key != "command" and value is not None
    }
    try:
        settings = EndpointSettings.from_sources(os.environ, flags)
        configured = endpoints(settings, name if isinstance(name, str) else None)
    except SettingsError as exc:
        print(f"serving endpoint: error: {exc}", file=sys.stderr)
        return 2
    return run(settings, configured)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(parser().parse_args(argv))
    if arguments["command"] == "endpoint":
        return _endpoint(arguments)
    flags = {
        name: str(value).lower() if isinstance(value, bool) else value
        for name, value in arguments.items()
        if name != "command" and value is not None
    }
    try:
        settings = Settings.from_sources(os.environ, flags)
        check_settings(settings)
    except SettingsError as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 2
    try:
        check_port(settings)
    except CannotListen as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 1
    from .server import serve  # here, so that `serving --help` stays fast

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
