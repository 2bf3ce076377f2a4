"""Where freight movements come from: landing files, the synthetic generator (demo and tests)."""
