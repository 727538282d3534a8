"""The embedded default chat: cards printed to the terminal, actions through the CLI."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bot.cards import Card
from bot.transport import MessageRef


class ConsoleChannel:
    kind = "console"
    language = "en"

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._sent = 0

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "ConsoleChannel":
        return cls()

    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef:
        self._sent += 1
        self.console.print(self._render(card))
        return MessageRef(self.kind, target, str(self._sent))

    def update(self, ref: MessageRef, card: Card) -> None:
        self.console.print(self._render(card, updated=True))

    def _render(self, card: Card, updated: bool = False) -> Panel:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for name, value in card.fields:
            grid.add_row(name, value)
        body = Table.grid()
        body.add_row(grid)
        body.add_row(Text(""))
        body.add_row(Text(card.text))
        if card.note:
            body.add_row(Text(card.note, style="bold green"))
        for ev in card.evidence:
            body.add_row(Text(f"  ↳ {ev}", style="dim"))
        if card.buttons:
            actions = "   ".join(f"[{b.label}]" for b in card.buttons)
            body.add_row(Text(""))
            body.add_row(Text(actions, style="cyan"))
        style = {"warning": "yellow", "info": "blue", "critical": "red"}.get(card.severity, "white")
        title = card.title + (" (updated)" if updated else "")
        return Panel(body, title=title, title_align="left", border_style=style)
