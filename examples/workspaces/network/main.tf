# A second small workspace for tfward demos and tests: a "network" of two things, the
# second depending on the first (so they are created in order, not in parallel).
#
# Like examples/workspaces/demo: the demo provider comes from dev_overrides, the store
# from $TFWARD_DEMO_STORE_DIR, and `terraform init` must not be run.

terraform {
  required_providers {
    demo = {
      source = "example.com/tfward/demo"
    }
  }
}

variable "delay" {
  type        = number
  default     = 0
  description = "Seconds each create/update takes."
}

resource "demo_thing" "vpc" {
  name  = "network-vpc"
  delay = var.delay
}

resource "demo_thing" "subnet" {
  name  = "network-subnet"
  delay = var.delay
  value = demo_thing.vpc.id
}

output "ids" {
  description = "The ids of the vpc and the subnet."
  value = {
    vpc    = demo_thing.vpc.id
    subnet = demo_thing.subnet.id
  }
}
