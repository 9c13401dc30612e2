"""The operator's commands behind the CLI, one module per verb group (as kubectl's cmd
packages are): ``cluster``, ``status``, ``rollout``, ``diff``; ``common`` holds what they
share."""
