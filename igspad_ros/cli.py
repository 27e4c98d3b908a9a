"""Shared command-line behaviour of the offline tools."""
import argparse


class ToolParser(argparse.ArgumentParser):
    """Argument parser whose usage errors are one stderr line and exit status 2."""

    def error(self, message):
        """Print one line and exit 2 (argparse's default prints the usage too)."""
        self.exit(2, f'{self.prog}: error: {message}\n')
