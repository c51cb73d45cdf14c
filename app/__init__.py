"""dreamarcade's command line and Pygame player."""
