"""Platform-neutral conversation core: neutral types, ports, services."""
