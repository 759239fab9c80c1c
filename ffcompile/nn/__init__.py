"""Neural-network modules, losses, initializers."""
