"""The package as a user gets it: build the sdist and the wheel, check what they
hold, install the wheel (not the checkout) into a fresh venv, make a site by
following the README's "Installation into an existing site" and nothing else,
then issue a token and read 24 points from the endpoint over real HTTP.

Run with the development venv's Python (it has ``build``): ``.venv/bin/python
.ci/wheel_test.py [--python INTERPRETER]``, the fresh venv's interpreter being
that one (default: the running one). Packages come from PyPI through pip (and
its cache); pip picks the newest Django the interpreter can run.
Exits non-zero, saying why, on the first thing that is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Installation into an existing site"
PACKAGE = "project_stats"
# Never shipped: the demo site, the tests, the benchmarks.
REPOSITORY_ONLY = ("config", "tests", "bench", "manage.py")
ORGANIZATION, PROJECT, USER = "acme", "backend", "alice"

# Sets up what the README leaves to the site (a user, an organization, a member,
# counts), through the public models and tsdb. Prints what it wrote.
SEED = f"""
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.template.loader import get_template
from django.utils import timezone
import project_stats
from project_stats import tsdb
from project_stats.models import Organization, OrganizationMember, Project

user = get_user_model().objects.create_user({USER!r})
organization = Organization.objects.create(slug={ORGANIZATION!r}, name="Acme")
project = Project.objects.create(organization=organization, slug={PROJECT!r}, name="Backend")
OrganizationMember.objects.create(organization=organization, user=user)
now = timezone.now()
for hours in range(30):  # the last 6 fall outside the 24 hours read
    tsdb.incr(project, "received", count=hours + 1, timestamp=now - timedelta(hours=hours))
get_template("admin/project_stats/project/change_form.html")
print(project_stats.__file__)
print(now.timestamp())
"""

# A WSGI server on a port the kernel picks (no race for a free port), serving the
# site's own wsgi.py; it prints the port, then serves until terminated.
SERVE = """
from wsgiref.simple_server import WSGIRequestHandler, make_server
from mysite.wsgi import application

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, application, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"""


class Failure(Exception):
    pass


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(  # noqa: S603  (our own arguments)
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode:
        raise Failure(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def build(out: Path) -> tuple[Path, Path]:
    # The wheel is built from the sdist, so the sdist must hold all it needs.
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return sdist, wheel


def package_files() -> set[str]:
    source = ROOT / PACKAGE
    return {
        path.relative_to(ROOT).as_posix()
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def check_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    stray = sorted(n for n in names if n.split("/")[0] not in (PACKAGE, dist_info))
    if stray:
        raise Failure(f"the wheel holds files outside {PACKAGE}/: {stray}")
    missing = sorted(package_files() - names)
    if missing:
        raise Failure(f"the wheel lacks {missing}")
    for kind, pattern in (
        ("templates", rf"{PACKAGE}/templates/.+\.html"),
        ("migrations", rf"{PACKAGE}/migrations/0001_initial\.py"),
        ("py.typed", rf"{PACKAGE}/py\.typed"),
        ("the license", rf"{re.escape(dist_info)}/licenses/LICENSE"),
    ):
        if not any(re.fullmatch(pattern, n) for n in names):
            raise Failure(f"the wheel lacks {kind}")
    with zipfile.ZipFile(wheel) as archive:
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    if metadata["License-Expression"] != "BSD-3-Clause":
        raise Failure(f"License-Expression is {metadata['License-Expression']!r}")
    django = [r for r in metadata.get_all("Requires-Dist", []) if re.match(r"Django\b", r)]
    if not django or "<7" not in django[0]:
        raise Failure(f"Django is not bounded below its next major version: {django}")
    print(f"   {wheel.name}: {len(names)} files, {wheel.stat().st_size // 1024} KiB")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "pyproject.toml", f"{PACKAGE}/py.typed"):
        if needed not in names:
            raise Failure(f"the sdist lacks {needed}")
    stray = sorted(n for n in names if n.split("/")[0] in REPOSITORY_ONLY)
    if stray:
        raise Failure(f"the sdist holds repository-only files: {stray}")
    print(f"   {sdist.name}: {len(names)} entries")


def installation_section() -> str:
    text = (ROOT / "README.md").read_text()
    if SECTION not in text:
        raise Failure(f"README.md has no {SECTION!r}")
    return re.split(r"^## ", text.split(SECTION, 1)[1], flags=re.M)[0]


def python_edits(code: str) -> dict[str, str]:
    """The README's Python, per file it names (``# settings.py``), ready to append.

    A ``...,`` line inside ``NAME = [`` stands for the site's own entries, so it
    becomes ``*NAME,`` (the right-hand side still sees the old list).
    """
    edits: dict[str, list[str]] = {}
    target: str | None = None
    assigned: str | None = None
    for line in code.splitlines():
        marker = re.fullmatch(r"# (\w+\.py)", line.strip())
        if marker:
            target = marker.group(1)
            continue
        if not line.strip():
            continue
        if target is None:
            raise Failure(f"README Python before a '# file.py' line: {line!r}")
        opening = re.match(r"(\w+) = \[", line)
        if opening:
            assigned = opening.group(1)
        if line.strip() == "...,":
            if assigned is None:
                raise Failure(f"README: '...' outside a list assignment in {target}")
            line = line.replace("...", f"*{assigned}")
        edits.setdefault(target, []).append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in edits.items()}


def follow_readme(work: Path, wheel: Path, interpreter: str) -> tuple[Path, Path, dict[str, str]]:
    """Does what the section says; returns the venv's python, the site, its env."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    site = work / "site"
    python = work / "venv" / "bin" / "python"
    run(interpreter, "-m", "venv", work / "venv", env=env)
    installed = False
    for language, code in re.findall(r"```(\w+)\n(.*?)```", installation_section(), re.S):
        if language == "python":
            if not installed:
                raise Failure("README: settings come before the install command")
            for name, addition in python_edits(code).items():
                path = site / "mysite" / name
                if not path.exists():
                    raise Failure(f"README names {name}, which a new site does not have")
                with path.open("a") as file:
                    file.write("\n# From the README's installation section\n" + addition)
            continue
        if language != "bash":
            raise Failure(f"README: a {language!r} block in the installation section")
        for raw in code.splitlines():
            command = raw.split("#", 1)[0].strip()
            if not command:
                continue
            if re.fullmatch(r"pip install django-project-stats", command):
                step(f"pip install {wheel.name} (for: {command})")
                run(python, "-m", "pip", "install", "--quiet", wheel, env=env)
                installed = True
                # The existing site: what `django-admin startproject` makes.
                site.mkdir()
                run(python, "-m", "django", "startproject", "mysite", site, env=env)
            elif command.startswith("python manage.py "):
                step(command)
                run(python, *command.split()[1:], cwd=site, env=env)
            else:
                raise Failure(f"README: an installation step this test cannot follow: {raw!r}")
    if not installed:
        raise Failure("README: no `pip install django-project-stats` in the installation section")
    return python, site, env


def get(url: str, token: str | None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (loopback http)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def serve_and_read(
    python: Path, site: Path, env: dict[str, str], token: str, seeded_at: str
) -> None:
    log = (site / "server.log").open("w")  # shown when something fails
    server = subprocess.Popen(  # noqa: S603  (our own arguments)
        [python, "-c", SERVE], cwd=site, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.strip().isdigit():
            raise Failure(f"the WSGI server did not start: {line!r}")
        port = int(line)
        url = f"http://127.0.0.1:{port}/api/0/projects/{ORGANIZATION}/{PROJECT}/stats/"
        step(f"GET {url}")
        status, body = get(url, token)
        if status != 200 or not isinstance(body, list) or len(body) != 24:
            raise Failure(f"expected 200 and 24 points, got {status}: {str(body)[:300]}")
        # Read again up to when the counts were written, so an hour turning between
        # then and now cannot move the buckets: the newest holds 1, the oldest 24.
        status, body = get(f"{url}?until={seeded_at}", token)
        counts = [count for _, count in body] if isinstance(body, list) else []
        if status != 200 or counts != list(range(24, 0, -1)):
            raise Failure(f"expected the counts 24 down to 1, got {status}: {str(body)[:300]}")
        print(f"   200, 24 points, {sum(counts)} events")
        status, body = get(url, None)
        if status != 401 or not isinstance(body, dict) or "detail" not in body:
            raise Failure(f"without a token: expected 401 with a detail, got {status}: {body}")
    except Failure as failure:
        server.terminate()
        server.wait(timeout=30)
        raise Failure(
            f"{failure}\nserver log:\n{(site / 'server.log').read_text()[-3000:]}"
        ) from None
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the fresh venv's interpreter")
    interpreter = parser.parse_args().python
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="project-stats-wheel-") as tmp:
        work = Path(tmp)
        try:
            step("python -m build")
            sdist, wheel = build(work / "dist")
            check_sdist(sdist)
            check_wheel(wheel)
            step("a fresh venv and a new site, following the README's installation section")
            python, site, env = follow_readme(work, wheel, interpreter)
            versions = "import sys, django; print(sys.version.split()[0], django.__version__)"
            print("   Python {} with Django {}".format(*run(python, "-c", versions).split()))
            step("a user, an organization, a project and counts")
            seeded = run(python, "manage.py", "shell", "-c", SEED, cwd=site, env=env)
            module, seeded_at = seeded.strip().splitlines()[-2:]
            if not module.startswith(str(work / "venv")):
                raise Failure(f"{PACKAGE} was not imported from the venv: {module}")
            step(f"python manage.py project_stats_token {USER}")
            output = run(python, "manage.py", "project_stats_token", USER, cwd=site, env=env)
            token = output.strip().splitlines()[-1]
            serve_and_read(python, site, env, token, seeded_at)
        except Failure as failure:
            print(f"FAILED: {failure}", file=sys.stderr)
            return 1
    print(f"wheel test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
