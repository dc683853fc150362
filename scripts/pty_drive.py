#!/usr/bin/env python3
"""Drive a program on a pseudo-terminal, as a person at a keyboard would.

usage: python3 scripts/pty_drive.py STEPS_JSON PROGRAM [ARGS...]
STEPS_JSON is a list of steps, each one of
  {"expect": TEXT, "timeout": S}   wait until TEXT appears in the output after the last match
  {"grow": N, "timeout": S}        wait until N more bytes of output arrived
  {"send": TEXT}                   type TEXT ("\\r" is Enter, "\\u0003" Ctrl-C, "\\u0004" Ctrl-D)
  {"sleep": S}
Prints one JSON object: {"ok": bool, "failed": the step that timed out or null,
"status": exit status (-SIGNAL when killed), "output": everything the program wrote}.
"""
import json
import os
import pty
import select
import signal
import sys
import time

steps = json.loads(sys.argv[1])
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)

out = bytearray()
mark = 0  # output before this has been matched


def read_some(deadline):
    left = deadline - time.time()
    if left <= 0:
        return False
    r, _, _ = select.select([fd], [], [], min(left, 0.2))
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return False
        if not data:
            return False
        out.extend(data)
    return True


failed = None
for step in steps:
    if "send" in step:
        os.write(fd, step["send"].encode())
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "expect" in step:
        want = step["expect"].encode()
        deadline = time.time() + step.get("timeout", 60)
        while out.find(want, mark) < 0:
            if not read_some(deadline) and time.time() >= deadline:
                break
        at = out.find(want, mark)
        if at < 0:
            failed = step
            break
        mark = at + len(want)
    elif "grow" in step:
        start = len(out)
        deadline = time.time() + step.get("timeout", 60)
        while len(out) - start < step["grow"] and time.time() < deadline:
            read_some(deadline)
        if len(out) - start < step["grow"]:
            failed = step
            break
        mark = len(out)

# let the program finish (or stop it), reading what it still writes
deadline = time.time() + (0 if failed else 30)
status = None
while status is None:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = os.waitstatus_to_exitcode(st)
        break
    if time.time() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, st = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(st)
        break
    read_some(time.time() + 0.2)
while read_some(time.time() + 0.2):
    pass
print(json.dumps({"ok": failed is None, "failed": failed, "status": status, "output": out.decode("utf-8", "replace")}))
