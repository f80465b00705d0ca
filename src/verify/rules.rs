//! `auto_rules`: contains, not_contains, regex, min_length, json_path_equals.
