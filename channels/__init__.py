"""One module per chat platform behind one tiny protocol (bot/transport.py); one registry:
kind -> class. Nothing outside this package asks which platform it is talking to.
"""

from channels.console import ConsoleChannel
from channels.slack import SlackChannel
from channels.telegram import TelegramChannel
from channels.wecom import WecomChannel, WecomRobotChannel

REGISTRY = {
    "console": ConsoleChannel,
    "slack": SlackChannel,
    "telegram": TelegramChannel,
    "wecom": WecomChannel,
    "wecom_robot": WecomRobotChannel,
}
# kinds that need a [chat.<section>] of their own before they can be built
SECTION = {"slack": "slack", "telegram": "telegram", "wecom": "wecom"}


def build(cfg, conversation=None) -> dict:
    """Every channel the configuration can use: the console, each configured platform, and
    whatever the routes name."""
    kinds = {"console"} | {k for k, section in SECTION.items() if getattr(cfg.chat, section) is not None}
    kinds |= {r.channel for r in cfg.chat.routes}
    return {k: REGISTRY[k].from_config(cfg, conversation) for k in sorted(kinds)}
