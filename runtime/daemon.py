"""Host start-up and shutdown: spawner, routers, Invoke API listener.

Order matters: the spawner is forked before the event loop exists, so every
sandbox is forked from a small process; then one anyio task group owns the
Invoke API server, every environment's task, and the signal watcher.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import traceback

import anyio
import anyio.abc

from rapi.http import HttpProtocol
from rapi.invocation import Outcome
from runtime import sandboxes
from runtime.config import Config
from runtime.environment import Environment, platform_error
from runtime.invoke_api import LIMITS, InvokeApi
from runtime.logs import FunctionLog, LogSink
from runtime.router import EnvironmentFactory, FunctionRouter
from sandbox.spawner import Spawner
from sandbox.spec import Mount

# Lambda gives a runtime without extensions up to 300 ms after SIGTERM.
SHUTDOWN_GRACE_S = 0.3


class Host:
    """Everything one `firelet serve` runs; built by `serve()`, no globals."""

    def __init__(
        self,
        config: Config,
        spawner: Spawner,
        task_group: anyio.abc.TaskGroup,
        rootless: bool = False,
    ) -> None:
        self.config = config
        self.rootless = rootless
        self._spawner = spawner
        self._tasks = task_group
        self.sink = LogSink()
        system = sandboxes.system_mounts()
        server = config.server
        self.routers: dict[str, FunctionRouter] = {}
        for name, function in config.functions.items():
            arn = f"arn:aws:lambda:{server.region}:{server.account_id}:function:{name}"
            router = FunctionRouter(function, arn, self._environment_factory(system))
            self.routers[name] = router
        self.invoke_api = InvokeApi(self.routers, server.region, server.account_id)

    def _environment_factory(self, system: tuple[Mount, ...]) -> EnvironmentFactory:
        logs: dict[str, FunctionLog] = {}

        def start(router: FunctionRouter, suppressed_init: bool) -> Environment:
            function = router.function
            log = logs.get(function.name)
            if log is None:
                log = logs[function.name] = FunctionLog(self.sink, function.name)
            spec = sandboxes.function_spec(function, self.config.server, system, self.rootless)
            env = Environment(
                router, self._spawner, spec, log, self.config.server.init_timeout_s, suppressed_init
            )
            self._tasks.start_soon(self._run_environment, env, name=f"environment {function.name}")
            return env

        return start

    async def _run_environment(self, env: Environment) -> None:
        # A bug in an environment must not take the host (and every other
        # function) down with it: log it, kill that sandbox, carry on.
        try:
            await env.run()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            if env.process is not None:
                env.process.kill()
            env.router.environment_ended(env)

    def stop(self) -> None:
        """Answer what is still waiting, kill every environment."""
        for router in self.routers.values():
            router.stop(SHUTDOWN_GRACE_S)
            while router.pending:
                invocation = router.pending.popleft()
                invocation.on_complete(
                    invocation,
                    Outcome.FUNCTION_ERROR,
                    platform_error("Sandbox.Failure", "The host is shutting down"),
                    b"application/json",
                )
        self.sink.flush()


def _raise_fd_limit() -> None:
    # Every environment holds a few fds (listener, log pipe, pidfd, its
    # connections): use all the hard limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(config: Config) -> int:
    """Run the host until SIGTERM/SIGINT. Returns the process exit code."""
    try:
        os.makedirs(config.server.state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        print(
            f"firelet: cannot create state_dir {config.server.state_dir}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    _raise_fd_limit()
    rootless = os.geteuid() != 0
    if rootless:
        print(
            "firelet: rootless mode: sandboxes run in a user namespace, as its root without"
            " capabilities, and without cgroup limits (memory, pids, CPU); run as root for those",
            file=sys.stderr,
            flush=True,
        )
    spawner = Spawner.start(nest_cgroups=config.server.cgroup_parent == "auto", rootless=rootless)
    try:
        anyio.run(
            _main,
            config,
            spawner,
            rootless,
            backend="asyncio",
            backend_options={"use_uvloop": True},
        )
    finally:
        spawner.close()
    return 0


async def _main(config: Config, spawner: Spawner, rootless: bool) -> None:
    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as tasks:
        host = Host(config, spawner, tasks, rootless)
        server = config.server
        try:
            listener = await loop.create_server(
                lambda: HttpProtocol(host.invoke_api, LIMITS),
                server.host,
                server.port,
                reuse_address=True,
            )
        except OSError as exc:
            print(
                f"firelet: cannot listen on {server.host}:{server.port}: {exc.strerror}",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        port = listener.sockets[0].getsockname()[1]
        names = ", ".join(sorted(host.routers)) or "none"
        print(
            f"firelet: listening on http://{server.host}:{port} (functions: {names})",
            file=sys.stderr,
            flush=True,
        )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                print(
                    f"firelet: {signal.Signals(signum).name}, shutting down",
                    file=sys.stderr,
                    flush=True,
                )
                break
        listener.close()
        host.stop()
        # Environments end when the spawner reaps their sandboxes; do not
        # wait on a stuck one forever.
        with anyio.move_on_after(5):
            while any(r.env is not None for r in host.routers.values()):
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    # What the environments logged on their way out.
    host.sink.flush()
