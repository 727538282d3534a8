"""One module per chat platform behind one tiny protocol; one registry: kind -> class."""

from channels.console import ConsoleChannel

REGISTRY = {"console": ConsoleChannel}
