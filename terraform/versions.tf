terraform {
  # 1.10 brought S3-native state locking (use_lockfile) and ephemeral variables; 1.11 made the
  # lock generally available and added write-only arguments (the webhook's value_wo, alerts.tf).
  required_version = ">= 1.11"

  # The committed .terraform.lock.hcl pins the exact version (5.100.0, the version the emulated
  # apply runs); argument names are also checked against the 6.25 schema. `terraform init
  # -upgrade` (with network) moves the lock within this range.
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 7.0"
    }
  }

  # Remote state: S3 with SSE-KMS and S3-native locking (a <key>.tflock object, no DynamoDB).
  # Partial configuration: bucket, key, region and kms_key_id come from `-backend-config`
  # (`farmctl deploy --state-bucket NAME` creates the bucket and saves them in
  # farmctl.s3.tfbackend; by hand: `terraform init -backend-config=farmctl.s3.tfbackend`).
  # A local state, which would hold the stack's secrets in plain text, is used only when asked
  # for (`farmctl deploy --local-state`); see README.md "State".
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(
      {
        Project   = var.project
        ManagedBy = "terraform"
        Component = "smartfarm"
      },
      var.tags,
    )
  }
}
