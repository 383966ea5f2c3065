"""Neural-network building blocks of the world model and the actor-critic."""
