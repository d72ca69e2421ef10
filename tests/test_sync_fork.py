"""The sync door across fork(): a clear error in the child, never a wait for a thread that
did not cross."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from claude_force import AgentOrchestrator, UsageError
from claude_force.testing import Simulator

from .conftest import API_KEY


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_gets_a_usage_error_and_can_close(project: Path, sim: Simulator) -> None:
    orch = AgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False)
    agent = orch.list_agents()[0]
    assert orch.execute_agent(agent, "in the parent").success  # its loop thread runs
    pid = os.fork()
    if pid == 0:  # the child: the loop thread is the parent's
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang kills the child: the test fails
        signal.alarm(30)
        code = 3
        try:
            orch.execute_agent(agent, "in the child")
        except UsageError as exc:
            code = 0 if "before fork()" in str(exc) else 4
        orch.close()  # returns: nothing of the parent's is waited for
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert orch.execute_agent(agent, "in the parent again").success
    orch.close()
