"""One module per chat platform behind one tiny protocol (bot/transport.py); one registry:
kind -> class. Nothing outside this package asks which platform it is talking to.
"""

from importlib import import_module

# kind -> "module:class", imported when first built: each platform's SDK takes 0.1-0.3 s to
# import, which every `recon run` on the console alone would otherwise pay
REGISTRY = {
    "console": "channels.console:ConsoleChannel",
    "slack": "channels.slack:SlackChannel",
    "telegram": "channels.telegram:TelegramChannel",
    "wecom": "channels.wecom:WecomChannel",
    "wecom_robot": "channels.wecom:WecomRobotChannel",
}


def channel_class(kind: str):
    module, name = REGISTRY[kind].split(":")
    return getattr(import_module(module), name)


# kinds that need a [chat.<section>] of their own before they can be built
SECTION = {"slack": "slack", "telegram": "telegram", "wecom": "wecom"}


def build(cfg, conversation=None) -> dict:
    """Every channel the configuration can use: the console, each configured platform, and
    whatever the routes name."""
    kinds = {"console"} | {k for k, section in SECTION.items() if getattr(cfg.chat, section) is not None}
    kinds |= {r.channel for r in cfg.chat.routes}
    kinds |= {r.channel for r in cfg.alerts.admin_routes}
    kinds |= {r.channel for level in cfg.alerts.escalation for r in level.routes}
    return {k: channel_class(k).from_config(cfg, conversation) for k in sorted(kinds)}
