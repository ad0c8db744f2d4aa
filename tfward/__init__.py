"""tfward: runs Terraform for one team, with one termination funnel for every run."""

__version__ = "0.1.0"
