"""Sizes counted in units of 1,024 are written KiB, MiB, GiB: "MB" would claim 1,000,000 bytes."""

from django.core.exceptions import RequestDataTooBig

from webapp.sizes import human_size
from webapp.views import unreadable_request_message


def test_human_sizes_use_binary_units():
    assert human_size(12) == "12 bytes"
    assert human_size(1) == "1 byte"
    assert human_size(340 * 1024) == "340 KiB"
    assert human_size(int(1.5 * 1_048_576)) == "1.5 MiB"
    assert human_size(3 * 1024**3) == "3 GiB"


def test_a_request_with_too_much_text_names_the_limit_in_mib(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
    assert "more than 2.5 MiB, the most this server reads" in unreadable_request_message(RequestDataTooBig())
