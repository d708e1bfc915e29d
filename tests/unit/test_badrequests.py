"""The filter that turns aiohttp's log records of requests its parser refused into one
WARNING line without the request's bytes, at most ``burst`` in ``every`` seconds."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadStatusLine, LineTooLong

from server.badrequests import AIOHTTP_SERVER_LOGGER, BadRequestFilter, install

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEi"


def aiohttp_record(exc: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    """A record as ``RequestHandler.handle_error`` logs it (``logger.exception``)."""
    return logging.LogRecord(
        AIOHTTP_SERVER_LOGGER,
        level,
        __file__,
        1,
        "Error handling request from %s",
        ("10.0.0.7",),
        (type(exc), exc, None) if exc is not None else None,
    )


def too_long() -> LineTooLong:
    return LineTooLong(f"Bearer {TOKEN}{'1' * 100}...", 8190)


def test_a_refused_request_is_a_warning_line_without_its_bytes() -> None:
    record = aiohttp_record(too_long())
    assert BadRequestFilter().filter(record)
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage() == (
        "refused a malformed HTTP request from 10.0.0.7: LineTooLong, "
        "a request line or header over the size limit (400)"
    )
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert TOKEN[:10] not in line and "Traceback" not in line


def test_other_parse_errors_keep_a_lower_level_and_say_their_kind() -> None:
    record = aiohttp_record(BadStatusLine(f"GET /?token={TOKEN} HTTP/9"), logging.DEBUG)
    assert BadRequestFilter().filter(record)
    assert record.levelno == logging.DEBUG
    assert (
        record.getMessage() == "refused a malformed HTTP request from 10.0.0.7: BadStatusLine (400)"
    )


def test_the_servers_own_errors_pass_untouched() -> None:
    for exc in (RuntimeError("a bug"), None):
        record = aiohttp_record(exc)
        assert BadRequestFilter().filter(record)
        assert record.levelno == logging.ERROR
        assert record.msg == "Error handling request from %s"
        assert record.exc_info == ((type(exc), exc, None) if exc else None)


def test_at_most_burst_lines_in_every_window_and_the_next_says_how_many_went_unsaid() -> None:
    now = [0.0]
    filt = BadRequestFilter(burst=3, every=10.0, clock=lambda: now[0])
    said = [filt.filter(aiohttp_record(too_long())) for _ in range(5)]
    assert said == [True, True, True, False, False]
    now[0] = 9.9
    assert not filt.filter(aiohttp_record(too_long()))
    now[0] = 10.0
    record = aiohttp_record(too_long())
    assert filt.filter(record)
    assert record.getMessage().endswith("(400) (3 more went unsaid before this one)")
    record = aiohttp_record(too_long())
    assert filt.filter(record) and record.getMessage().endswith("(400)")


def test_install_puts_one_filter_on_aiohttps_logger() -> None:
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    before = list(logger.filters)
    try:
        install()
        install()
        added = [f for f in logger.filters if f not in before]
        assert len([f for f in logger.filters if isinstance(f, BadRequestFilter)]) == 1
        assert len(added) <= 1
    finally:
        for f in list(logger.filters):
            if f not in before:
                logger.removeFilter(f)
