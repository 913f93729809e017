"""SQL: statements split by a real parser, executed with their file:line, online steps, lint."""
