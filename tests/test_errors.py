"""cyclegan.errors: the one-line message helper."""

from cyclegan.errors import first_line


def test_first_line_of_an_error():
    assert first_line(RuntimeError(
        "\n  [enforce fail] disk full \nat frame 1\n")) == "[enforce fail] disk full"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("  \n "), "") == ""
