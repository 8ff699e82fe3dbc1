"""The one error of the configuration layer.

It lives here, at the bottom, because settings are validated before anything else exists;
``bridge.errors`` draws it in the bridge's error tree. Like every deliberate error its message
is one line per problem, each naming the variable to fix, and it is never retried.
"""


class ConfigError(Exception):
    """A setting is malformed, missing or inconsistent; the message names the variable."""

    retryable = False
