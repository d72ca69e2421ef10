"""The HMAC secret that signs cache entries.

Order: the ``cache_secret`` argument, else ``CLAUDE_CACHE_SECRET``, else a file of 32 random
bytes created once in the user's config folder with mode 0600. There is no built-in default:
a secret everyone knows would let anyone forge entries.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .._errors import CacheDirectoryError, InvalidArgumentError
from .._files import FileProblem, read_regular, shown
from ._paths import default_config_dir, ensure_private_dir

__all__ = ["ENV_VAR", "SECRET_FILE_NAME", "check_secret", "load_secret"]

ENV_VAR = "CLAUDE_CACHE_SECRET"
SECRET_FILE_NAME = "cache-secret"
_SECRET_BYTES = 32
_MIN_BYTES = 16
_MAX_FILE_BYTES = 4096  # the file holds 65 characters; anything much larger is not ours
_REPLACE = (
    f"remove it (a new secret is generated and existing cache entries then miss), or set {ENV_VAR}"
)


def _as_bytes(secret: str | bytes, origin: str) -> bytes:
    try:
        # surrogateescape: bytes that are not UTF-8 in the environment (Python keeps them as
        # lone surrogates) are the secret's own bytes again.
        raw = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"{origin} holds a lone surrogate and cannot be turned into bytes; pass the "
            "secret as bytes, or as text without it"
        ) from None
    raw = bytes(raw)
    if len(raw) < _MIN_BYTES:
        raise InvalidArgumentError(
            f"{origin} is {len(raw)} bytes long; use at least {_MIN_BYTES} random bytes, e.g. "
            'python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return raw


def _refuse(problem: str, fix: str) -> CacheDirectoryError:
    return CacheDirectoryError(f"cache secret file {problem}; {fix}")


def _read_secret_file(path: Path) -> bytes | None:
    """The secret in ``path``, or None when there is no file yet.

    The file must be our own regular file: opened without following a link (a link could
    point at any file of the user) and without blocking (a FIFO would hang every run).
    """
    try:
        data, info = read_regular(path, limit=_MAX_FILE_BYTES, follow_links=False)
    except FileProblem as missing:
        if missing.kind != "missing":
            raise _refuse_problem(missing) from None
        if not os.path.lexists(path):
            return None
        try:  # another process published the file between our open and our check
            data, info = read_regular(path, limit=_MAX_FILE_BYTES, follow_links=False)
        except FileProblem as problem:
            raise _refuse_problem(problem) from None
    return _check_secret(path, data, info)


def _refuse_problem(problem: FileProblem) -> CacheDirectoryError:
    if problem.kind == "unreadable":
        return _refuse(problem.summary, f"{problem.fix}, or set {ENV_VAR}")
    return _refuse(problem.summary, _REPLACE)


def _check_secret(path: Path, data: bytes, info: os.stat_result) -> bytes:
    """The secret in the file's bytes, if the file is private to us and well formed."""
    fix = f"run `chmod 600 {shown(path)}`, or delete it to generate a new secret"
    if info.st_uid != os.getuid():
        raise _refuse(f"{shown(path)} is owned by uid {info.st_uid}", fix)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _refuse(
            f"{shown(path)} is readable or writable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o})",
            fix,
        )
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included
        raw = b""
    if len(raw) < _MIN_BYTES:
        raise _refuse(
            f"{shown(path)} does not hold a hex secret of at least {_MIN_BYTES} bytes",
            "delete it to generate a new one (existing cache entries will then miss)",
        )
    return raw


def _create_secret_file(path: Path) -> None:
    # Written in full under a private temporary name, then published with link(), which
    # fails if the name exists: a reader never sees a half-written file, and when several
    # processes race exactly one secret wins and the others read it.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # O_EXCL: never reuses or follows anything already at the name; 0600 from the start.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_bytes(_SECRET_BYTES).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)


def check_secret(secret: str | bytes | None) -> None:
    """Refuse now a secret given (or in ``CLAUDE_CACHE_SECRET``) that would be refused when
    the cache opens; the secret file is left to then."""
    if secret is not None:
        _as_bytes(secret, "cache_secret")
        return
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        _as_bytes(from_env, ENV_VAR)


def load_secret(secret: str | bytes | None = None, *, config_dir: Path | None = None) -> bytes:
    """Return the signing secret, creating the secret file on first use."""
    if secret is not None:
        return _as_bytes(secret, "cache_secret")
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return _as_bytes(from_env, ENV_VAR)
    folder = ensure_private_dir(
        config_dir if config_dir is not None else default_config_dir(),
        what="cache secret directory",
        other=f"set {ENV_VAR} or pass cache_secret",
    )
    path = folder / SECRET_FILE_NAME
    secret = _read_secret_file(path)
    if secret is not None:
        return secret
    try:
        _create_secret_file(path)
    except OSError as exc:
        raise _refuse(
            f"{shown(path)} cannot be created ({exc.strerror})",
            f"set {ENV_VAR} or pass cache_secret",
        ) from exc
    secret = _read_secret_file(path)
    if secret is None:  # deleted between our write and our read
        raise _refuse(f"{shown(path)} disappeared as it was created", "run again")
    return secret
