"""The package as a user gets it: build the sdist and the wheel, check what they
hold, install the wheel (not the checkout) into a fresh venv, and follow the
tutorial (docs/tutorial/index.md) with its own files (docs/tutorial/mysite/):
a site made by ``django startproject``, counts recorded by its view and by the
Python examples, a token, the counts read over real HTTP; then the Redis write
buffer turned on (a redis-server of its own on a free port), counts read
before and after a flush. On SQLite, and on PostgreSQL with ``--postgres URL``
(a database ``<name>_tutorial`` on that server, created and dropped here);
then the README's quickstart as written, in another new site.

Run with the development venv's Python (it has ``build``): ``.venv/bin/python
.ci/wheel_test.py [--python INTERPRETER] [--postgres URL]``, the fresh venv's
interpreter being that one (default: the running one). Packages come from
PyPI through pip (and its cache); pip picks the newest Django the interpreter
can run. Exits non-zero, saying why, on the first thing that is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial" / "mysite"
PACKAGE = "project_stats"
# Never shipped: the demo site, the tests, the benchmarks.
REPOSITORY_ONLY = ("config", "tests", "bench", "manage.py")
# What the tutorial's files create.
ORGANIZATION, PROJECT, USER = "acme", "backend", "alice"

# Not in the tutorial: where the package was imported from, that its admin
# templates ship, and the received counts stored in the database (hourly).
INSPECT = """
from django.template.loader import get_template
from django.db.models import Sum
import project_stats
from project_stats.models import EventCount
get_template("admin/project_stats/project/change_form.html")
print(project_stats.__file__)
hourly = EventCount.objects.filter(rollup=3600, stat=0, environment="")
print(hourly.aggregate(n=Sum("count"))["n"] or 0)
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


def get(url: str, token: str | None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (loopback http)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def tutorial_file(name: str) -> Path:
    path = TUTORIAL / name
    if not path.exists():
        raise Failure(f"the tutorial has no {path.relative_to(ROOT)}")
    return path


def append(target: Path, source: Path | str, why: str) -> None:
    text = source.read_text() if isinstance(source, Path) else source
    with target.open("a") as file:
        file.write(f"\n# {why}\n{text}")


class Site:
    """The tutorial's site in ``work``, on one database; steps in the tutorial's order."""

    def __init__(self, work: Path, wheel: Path, interpreter: str, database_url: str | None):
        self.work, self.wheel, self.database_url = work, wheel, database_url
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.python = work / "venv" / "bin" / "python"
        self.site = work / "mysite"
        self.token = ""
        run(interpreter, "-m", "venv", work / "venv", env=self.env)

    def manage(self, *args: str) -> str:
        return run(self.python, "manage.py", *args, cwd=self.site, env=self.env)

    def shell(self, script: str) -> str:
        """``python manage.py shell < script``, as ``shell -c`` (Django's shell reads
        stdin only when it is ready at once, a race with a pipe)."""
        return self.manage("shell", "-c", (self.site / script).read_text())

    def install(self, extras: str = "") -> None:
        # The tutorial installs from a checkout; this installs the wheel built from it.
        requirement = f"{self.wheel}[{extras}]" if extras else str(self.wheel)
        step(f"pip install {self.wheel.name}{f'[{extras}]' if extras else ''}")
        run(self.python, "-m", "pip", "install", "--quiet", requirement, env=self.env)

    def create(self) -> None:
        self.install("postgres" if self.database_url else "")
        step("django startproject mysite; the tutorial's settings, urls.py, views.py")
        run(self.python, "-m", "django", "startproject", "mysite", cwd=self.work, env=self.env)
        settings = self.site / "mysite" / "settings.py"
        append(settings, tutorial_file("settings_append.py"), "The tutorial, step 2")
        if self.database_url:  # not in the tutorial: its database is the test's
            parsed = urllib.parse.urlsplit(self.database_url)
            database = {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parsed.path.lstrip("/"),
                "USER": parsed.username or "",
                "PASSWORD": parsed.password or "",
                "HOST": parsed.hostname or "",
                "PORT": str(parsed.port or ""),
            }
            append(settings, f"DATABASES = {{'default': {database!r}}}\n", "This test's database")
        shutil.copy(tutorial_file("urls.py"), self.site / "mysite" / "urls.py")
        shutil.copy(tutorial_file("views.py"), self.site / "mysite" / "views.py")
        for script in ("create_organization.py", "record_examples.py"):
            shutil.copy(tutorial_file(script), self.site / script)
        step("python manage.py migrate; python manage.py shell < create_organization.py")
        self.manage("migrate", "--noinput")
        print("   " + self.shell("create_organization.py").strip().splitlines()[-1])

    def inspect(self) -> int:
        """Checks where the package came from; returns the hourly received counts stored."""
        module, stored = self.manage("shell", "-c", INSPECT).strip().splitlines()[-2:]
        if not module.startswith(str(self.work / "venv")):
            raise Failure(f"{PACKAGE} was not imported from the venv: {module}")
        return int(stored)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """The site's wsgi.py served on a port the kernel picks, until stopped."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.log_path = site.site / "server.log"
        self.log = self.log_path.open("a")  # shown when something fails
        self.process = subprocess.Popen(  # noqa: S603  (our own arguments)
            [site.python, "-c", SERVE],
            cwd=site.site,
            env=site.env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.strip().isdigit():
            self.stop()
            raise Failure(f"the WSGI server did not start: {line!r}{self.tail()}")
        self.base = f"http://127.0.0.1:{int(line)}"

    def tail(self) -> str:
        return f"\nserver log:\n{self.log_path.read_text()[-3000:]}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()

    def signup(self, times: int) -> None:
        """``curl -X POST .../signup/``, the tutorial's view."""
        for _ in range(times):
            request = urllib.request.Request(f"{self.base}/signup/", data=b"", method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                if response.status != 201:
                    raise Failure(f"POST /signup/ answered {response.status}")

    def received(self, expected: int) -> None:
        """The tutorial's curl: 24 hourly points holding ``expected`` events."""
        url = f"{self.base}/api/0/projects/{ORGANIZATION}/{PROJECT}/stats/"
        status, body = get(url, self.site.token)
        if status != 200 or not isinstance(body, list) or len(body) != 24:
            raise Failure(f"expected 200 and 24 points, got {status}: {str(body)[:300]}")
        total = sum(count for _, count in body)
        if total != expected:
            raise Failure(f"expected {expected} events in the 24 points, got {total}: {body}")
        print(f"   GET {url}: 200, 24 points, {total} events")

    def admin_chart(self, expected: int) -> None:
        """The tutorial's admin step: a superuser logs in and the project's change
        page draws its last 24 hours, ``expected`` received events in all."""
        password = secrets.token_urlsafe(16)
        env = {**self.site.env, "DJANGO_SUPERUSER_PASSWORD": password}
        run(
            self.site.python,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
            cwd=self.site.site,
            env=env,
        )
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        login = f"{self.base}/admin/login/"
        with browser.open(login, timeout=30) as response:
            form = response.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        if token is None:
            raise Failure("the admin's login page has no CSRF token")
        fields = {"csrfmiddlewaretoken": token.group(1), "username": "admin"}
        fields["password"] = password
        data = urllib.parse.urlencode({**fields, "next": "/admin/"}).encode()
        request = urllib.request.Request(login, data=data, headers={"Referer": login})  # noqa: S310
        with browser.open(request, timeout=30) as response:
            if "/admin/login/" in response.url:
                raise Failure("could not log in to the admin")
        pk = (
            self.site.manage(
                "shell",
                "-c",
                f"from project_stats.models import Project; "
                f"print(Project.objects.get(slug={PROJECT!r}).pk)",
            )
            .strip()
            .splitlines()[-1]
        )
        page = f"{self.base}/admin/project_stats/project/{pk}/change/"
        with browser.open(page, timeout=30) as response:
            html = response.read().decode()
        total = re.search(r'<strong class="project-stats-total">([^<]*)</strong>', html)
        if 'class="project-stats-chart"' not in html or total is None:
            raise Failure(f"{page} draws no chart")
        if total.group(1).strip() != str(expected):
            raise Failure(f"the chart's total is {total.group(1)!r}, expected {expected}")
        print(f"   GET {page}: the chart, {expected} received events")


def redis_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of this test's own (the tutorial's buffer must not touch another's)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise Failure("redis-server is needed for the tutorial's write buffer step")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603  (our own arguments)
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise Failure(f"redis-server did not answer on port {port}")


def follow_tutorial(work: Path, wheel: Path, interpreter: str, database_url: str | None) -> None:
    site = Site(work, wheel, interpreter, database_url)
    site.create()
    versions = "import sys, django; print(sys.version.split()[0], django.__version__)"
    print("   Python {} with Django {}".format(*run(site.python, "-c", versions).split()))
    server = Server(site)
    try:
        step("three POST /signup/ (the view calls tsdb.incr); shell < record_examples.py")
        server.signup(3)
        examples = site.shell("record_examples.py").strip().splitlines()[-1]
        print(f"   {examples}")
        # The view's 3 and the examples' 1 + 2, received within the 24 hours.
        if examples != "25 points, 6 received":
            raise Failure(f"record_examples.py printed {examples!r}")
        step(f"python manage.py project_stats_token {USER}")
        site.token = site.manage("project_stats_token", USER).strip().splitlines()[-1]
        server.received(6)
        status, body = get(f"{server.base}/api/0/projects/{ORGANIZATION}/{PROJECT}/stats/", None)
        if status != 401 or not isinstance(body, dict) or "detail" not in body:
            raise Failure(f"without a token: expected 401 with a detail, got {status}: {body}")
        step("the admin: createsuperuser, log in, the project's chart")
        server.admin_chart(6)
    except Failure as failure:
        raise Failure(f"{failure}{server.tail()}") from None
    finally:
        server.stop()

    step("the write buffer: [redis], settings_buffer.py, a redis-server of this test's own")
    redis, redis_url = redis_server(work)
    try:
        site.install("redis")
        append(site.site / "mysite" / "settings.py", tutorial_file("settings_buffer.py"), "Step 10")
        site.env["REDIS_URL"] = redis_url
        # The package's deployment checks (its Redis) find nothing; the new
        # site's own (DEBUG, its secret, Django 6.1's mail backend) are not ours.
        checked = subprocess.run(  # noqa: S603  (our own arguments)
            [site.python, "manage.py", "check", "--deploy"],
            cwd=site.site,
            env=site.env,
            capture_output=True,
            text=True,
        )
        output = (checked.stdout + checked.stderr).splitlines()
        ours = [line for line in output if "project_stats.E" in line]
        if ours:
            raise Failure("check --deploy: " + "; ".join(ours))
        stored = site.inspect()
        server = Server(site)
        try:
            server.signup(3)
            if site.inspect() != stored:
                raise Failure("with the buffer on, the view wrote to the database")
            server.received(9)  # read before a flush: the buffered counts are added
            step("python manage.py project_stats_flush")
            print("   " + site.manage("project_stats_flush").strip().splitlines()[-1])
            if site.inspect() != stored + 3:
                raise Failure("the flush did not move the 3 buffered events to the database")
            server.received(9)
        except Failure as failure:
            raise Failure(f"{failure}{server.tail()}") from None
        finally:
            server.stop()
    finally:
        redis.terminate()
        redis.wait(timeout=30)
    follow_schema_step(site)
    if database_url is None:
        follow_readme_quickstart(site)


def get_page(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310  (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()[-2000:]


def follow_schema_step(site: Site) -> None:
    """Step 11: the schema and Swagger UI answer, the latter loading nothing from elsewhere."""
    step("the schema and Swagger UI: settings_schema.py, urls_schema.py")
    run(site.python, "-m", "pip", "install", "--quiet", "drf-spectacular-sidecar", env=site.env)
    append(site.site / "mysite" / "settings.py", tutorial_file("settings_schema.py"), "Step 11")
    append(site.site / "mysite" / "urls.py", tutorial_file("urls_schema.py"), "Step 11")
    server = Server(site)
    try:
        status, _ = get_page(f"{server.base}/api/0/schema/")
        if status != 200:
            raise Failure(f"GET /api/0/schema/ answered {status}")
        for page in ("swagger",):
            status, html = get_page(f"{server.base}/api/0/schema/{page}/")
            if status != 200:
                raise Failure(f"GET /api/0/schema/{page}/ answered {status}: {html}")
            remote = re.findall(r"""(?:src|href)\s*=\s*["']?((?:https?:)?//[^"' >]+)""", html)
            if remote or "drf_spectacular_sidecar/" not in html:
                raise Failure(f"/api/0/schema/{page}/ loads from elsewhere: {remote}")
            print(f"   GET /api/0/schema/{page}/: 200, its assets from the site")
    except Failure as failure:
        raise Failure(f"{failure}{server.tail()}") from None
    finally:
        server.stop()


def readme_quickstart() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's "Quickstart" section."""
    text = (ROOT / "README.md").read_text()
    if "## Quickstart" not in text:
        raise Failure("README.md has no '## Quickstart'")
    section = re.split(r"^## ", text.split("## Quickstart", 1)[1], flags=re.M)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def follow_readme_quickstart(site: Site) -> None:
    """The README's quickstart as written, in another new site of the same venv."""
    step("the README's quickstart, in a new site")
    site.site = site.work / "quickstart"
    site.site.mkdir()
    run(site.python, "-m", "django", "startproject", "mysite", site.site, env=site.env)
    blocks = readme_quickstart()
    languages = [language for language, _ in blocks]
    if languages != ["bash", "python", "python", "bash"]:
        raise Failure(f"README quickstart: expected bash, python, python, bash blocks: {languages}")
    (_, install), (_, files), (_, shell), (_, read) = blocks
    if not re.search(r"^pip install /path/to/django-project-stats\b", install, re.M):
        raise Failure(f"README quickstart: not an install from a checkout: {install!r}")
    for name, code in re.findall(r"^# (\w+\.py)\n(.*?)(?=^# \w+\.py\n|\Z)", files, re.M | re.S):
        append(site.site / "mysite" / name, code, "The README's quickstart")
    if not shell.startswith("# python manage.py migrate, then in python manage.py shell:"):
        raise Failure(f"README quickstart: the shell block does not say how to run it: {shell!r}")
    site.manage("migrate", "--noinput")
    site.manage("shell", "-c", shell)
    token_command, curl = [line for line in read.splitlines() if not line.startswith("#")]
    if token_command.split("#")[0].split() != ["python", "manage.py", "project_stats_token", USER]:
        raise Failure(f"README quickstart: {token_command!r}")
    site.token = site.manage("project_stats_token", USER).strip().splitlines()[-1]
    path = re.search(r"http://127\.0\.0\.1:8000(/\S+)", curl)
    if not path or path.group(1) != f"/api/0/projects/{ORGANIZATION}/{PROJECT}/stats/":
        raise Failure(f"README quickstart: the curl reads another path: {curl!r}")
    server = Server(site)
    try:
        server.received(1)
    except Failure as failure:
        raise Failure(f"{failure}{server.tail()}") from None
    finally:
        server.stop()


def postgres_database(url: str) -> tuple[str, str]:
    """A database of this test's own next to ``url``'s: (its URL, the admin URL)."""
    parsed = urllib.parse.urlsplit(url)
    name = f"{parsed.path.lstrip('/') or 'postgres'}_tutorial"
    return parsed._replace(path=f"/{name}").geturl(), name


def recreate(url: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg  # the development venv's: the test extra has it

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{name}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the fresh venv's interpreter")
    parser.add_argument(
        "--postgres", metavar="URL", help="also follow the tutorial on PostgreSQL, next to URL"
    )
    arguments = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="project-stats-wheel-") as tmp:
        work = Path(tmp)
        try:
            step("python -m build")
            sdist, wheel = build(work / "dist")
            check_sdist(sdist)
            check_wheel(wheel)
            step("the tutorial on SQLite, in a fresh venv")
            (work / "sqlite").mkdir()
            follow_tutorial(work / "sqlite", wheel, arguments.python, None)
            if arguments.postgres:
                url, name = postgres_database(arguments.postgres)
                step(f"the tutorial on PostgreSQL (database {name}), in a fresh venv")
                recreate(arguments.postgres, name)
                try:
                    (work / "postgres").mkdir()
                    follow_tutorial(work / "postgres", wheel, arguments.python, url)
                finally:
                    recreate(arguments.postgres, name, drop_only=True)
        except Failure as failure:
            print(f"FAILED: {failure}", file=sys.stderr)
            return 1
    print(f"wheel and tutorial test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
