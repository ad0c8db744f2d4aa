# A small workspace for tfward demos and tests: `things` demo_thing resources.
#
# The demo provider is loaded through dev_overrides (see examples/provider); the backing
# store and calls log come from $TFWARD_DEMO_STORE_DIR / $TFWARD_DEMO_CALLS_LOG, since
# there is no provider block here.  Do not run `terraform init` on it: with
# dev_overrides, Terraform 1.0.3's init still queries a registry for the provider and
# fails; plan/apply work without it.

terraform {
  required_providers {
    demo = {
      source = "example.com/tfward/demo"
    }
  }
}

variable "prefix" {
  type        = string
  default     = "demo"
  description = "Prefix of every thing's name."
}

variable "things" {
  type        = number
  default     = 3
  description = "How many things to create."
}

variable "delay" {
  type        = number
  default     = 0
  description = "Seconds each create/update takes (to make runs slow enough to interrupt)."
}

variable "value" {
  type        = string
  default     = null
  description = "Payload of every thing; change it to plan an in-place update."
}

resource "demo_thing" "this" {
  count = var.things

  name  = "${var.prefix}-${count.index}"
  delay = var.delay
  value = var.value
}

output "ids" {
  description = "The ids of the things, in count order."
  value       = demo_thing.this[*].id
}
