"""Sub-commands of `dreamarcade`: each has add_parser(sub, name, help) and run(args)."""
