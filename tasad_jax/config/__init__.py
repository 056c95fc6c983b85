"""The config schema: checks of every field in one pass, and saved configs
merged onto the installed defaults."""
