"""``fanout emulator``: the embedded emulator with a seeded organisation, until Ctrl-C."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from fanout.emulator import Organisation, seed_org_tree, seed_organisation, start_emulator
from fanout.errors import EXIT_OK
from fanout.local_worker import LOCAL_LOG_LEVEL
from fanout.moto_config import set_lambda_echo
from fanout.options import DEFAULT_REGION, DLQ_URL_ENV, QUEUE_URL_ENV

DEFAULT_ACCOUNTS = "111111111111,222222222222,333333333333"
DEFAULT_ENV_FILE = ".fanout-emulator.env"
# An account the emulator does not allow: the quickstart's redrive story (README).
NEW_ACCOUNT = "444444444444"


@click.command(
    "emulator",
    epilog="""\b
examples:
  fanout emulator                 # in another shell: source .fanout-emulator.env, then the
                                  # `# try:` lines it prints
  fanout emulator --host 0.0.0.0 --port 5000 --lambda-echo   # for sam local invoke
                                  # --env-vars local/env-vars.json""",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="0 picks a free port",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on (0.0.0.0: reachable from containers, e.g. sam local invoke)",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ENV_FILE,
    show_default=True,
    help="write the export lines there too (removed at exit); '' for none",
)
@click.option(
    "--lambda-echo",
    is_flag=True,
    help="moto's Docker-less Lambda: Invoke answers with the payload without running the "
    "function (lambda.invoke then succeeds; it shows the worker's path only)",
)
@click.option(
    "--random-ids",
    is_flag=True,
    help="moto's random ids for every resource (default: the fixed ids events/*.json name)",
)
@click.option(
    "--accounts",
    default=DEFAULT_ACCOUNTS,
    show_default=True,
    metavar="IDS",
    help="comma-separated target accounts to seed",
)
@click.option("--region", default=DEFAULT_REGION, show_default=True)
@click.option(
    "--visibility-timeout",
    type=click.IntRange(0, 43_200),
    default=5,
    show_default=True,
    help="seconds, of the work queue",
)
@click.option(
    "--max-receive-count",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="receives before the redrive policy moves a message to the DLQ",
)
def command(
    *,
    port: int,
    host: str,
    env_file: Path,
    lambda_echo: bool,
    random_ids: bool,
    accounts: str,
    region: str,
    visibility_timeout: int,
    max_receive_count: int,
) -> int:
    """Start the embedded emulator (moto, made faithful where the worker depends on it:
    docs/emulator.md), seed the ops account (work queue + DLQ + ledger table) and the target
    accounts (distributions, instances, WAF IP sets, functions, with the ids the sample events
    in events/ name), print the environment the worker and the CLI need (and write it to
    --env-file, to `source` in another shell), and run until Ctrl-C."""
    account_ids = tuple(a.strip() for a in accounts.split(",") if a.strip())
    with start_emulator(host=host, port=port) as emulator:
        if lambda_echo:
            set_lambda_echo(emulator.endpoint_url)  # before seeding: moto keeps modes apart
        org = seed_organisation(
            emulator.endpoint_url,
            account_ids,
            region,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
            stable_ids=not random_ids,
        )
        tree = seed_org_tree(emulator.endpoint_url, region)
        environment = {
            **org.handler_environment(log_level=LOCAL_LOG_LEVEL),
            QUEUE_URL_ENV: org.queue_url,
            DLQ_URL_ENV: org.dlq_url,
        }
        print(f"# fanout emulator at {org.endpoint_url}: ops account {org.ops_account}")
        if emulator.host != "127.0.0.1":
            print(
                f"#   listening on {emulator.host}:{emulator.port} (from a container: this "
                f"machine's address, port {emulator.port})"
            )
        for target in org.targets:
            print(
                f"#   {target.account}: distributions {' '.join(target.distribution_ids)}; "
                f"instances (Role=web) {' '.join(target.instance_ids)}"
            )
            extra = [
                *(f"instance {i}" for i in target.other_instances),
                *(f"WAF IP set (CLOUDFRONT) {i}" for i in target.ip_sets),
                *(f"function {f}" for f in target.functions),
            ]
            if extra:
                print(f"#     also {'; '.join(extra)}")
        ous = ", ".join(f"{name} {ou}" for name, ou in tree.ous.items())
        print(
            f"#   organisation {tree.root}: {len(tree.accounts)} accounts tagged env and team, "
            f"{', '.join(tree.suspended)} suspended; OUs {ous}\n"
            f"#     preview a selection: fanout targets --ous {tree.ous['Prod']} "
            "--include-child-ous --account-tag team=web"
        )
        exports = [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
        print("\n".join(exports))
        written = str(env_file) not in ("", ".")
        if written:
            env_file.write_text("".join(f"{line}\n" for line in exports), encoding="utf-8")
        for line in try_lines(org, env_file if written else None):
            print(line)
        if emulator.host != "127.0.0.1":
            print(
                "# sam local invoke WorkerFunction -e events/sqs-cloudfront-invalidate.json "
                "--env-vars local/env-vars.json --add-host host.docker.internal:host-gateway"
                + ("" if emulator.port == 5000 else "   (local/env-vars.json says port 5000)")
            )
        print("# Ctrl-C stops the emulator (its state is lost).", flush=True)
        # `kill` cleans up like Ctrl-C; and Ctrl-C (SIGINT) works even when this process was
        # started from a script's background job, which starts it with SIGINT ignored.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("# stopped", file=sys.stderr)
        finally:
            if written:
                with contextlib.suppress(OSError):
                    env_file.unlink()
    return EXIT_OK


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def try_lines(org: Organisation, env_file: Path | None) -> list[str]:
    """Ready-to-run commands for another shell: publish -> poll -> status, then a dead letter
    for an account the worker does not allow yet -> allow it -> redrive -> poll -> status."""
    commands = [f"source {shlex.quote(str(env_file))}"] if env_file is not None else []
    cloudfront = [t for t in org.targets if t.distribution_ids][:2]
    if cloudfront:
        accounts = ",".join(t.account for t in cloudfront)
        params = " ".join(
            f"--target-param {t.account}:distribution_id={t.distribution_ids[0]}"
            for t in cloudfront
        )
        commands += [
            f"fanout publish cloudfront.invalidate --accounts {accounts} "
            f"--param 'paths=/index.html,/img/*' {params} --request-id try-purge",
            "fanout poll --until-empty",
            "fanout status try-purge --refresh",
        ]
    commands += [
        f"fanout publish ssm.send_command --accounts {NEW_ACCOUNT} "
        '--param document_name=AWS-RunShellScript --param \'parameters={"commands":["uptime"]}\' '
        "--param instance_ids=i-0123456789abcdef0 --request-id try-new-account --force",
        "fanout poll --until-empty",
        "fanout redrive --dry-run",
        f'export ALLOWED_ACCOUNT_IDS="$ALLOWED_ACCOUNT_IDS,{NEW_ACCOUNT}"',
        "fanout redrive --filter-reason AccountNotAllowed",
        "fanout poll --until-empty",
        "fanout status try-new-account",
    ]
    return [("# try: " if n == 0 else "#      ") + c for n, c in enumerate(commands)]
