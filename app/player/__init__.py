"""The Pygame player: sessions (imagine/real/compare), keymaps, HUD, window loop, recording, replay."""
