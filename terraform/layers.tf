# The AWS SDK for pandas layer (var.pandas_layer_arn) runs inside all three Lambdas, next to the
# Discord webhook URL and the ingest API key they read. Its ARN is checked beyond its shape: it must
# be in var.region, and be either the AWSSDKPandas-Python312 layer of its publisher's account
# (336392948345; 839552336658 in ap-east-1, see
# https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html) or a layer published in the
# deploying account itself (one you build; anyone who can publish there can already change the
# functions). Any other account is refused at plan time, before a function is touched.

locals {
  pandas_layer_publishers = { "ap-east-1" = "839552336658" }
  pandas_layer_publisher  = lookup(local.pandas_layer_publishers, var.region, "336392948345")
  # arn:<partition>:lambda:<region>:<account>:layer:<name>:<version> (shape checked by the variable)
  pandas_layer = {
    region  = split(":", var.pandas_layer_arn)[3]
    account = split(":", var.pandas_layer_arn)[4]
    name    = split(":", var.pandas_layer_arn)[6]
  }
}

resource "terraform_data" "pandas_layer_origin" {
  input = var.pandas_layer_arn

  lifecycle {
    precondition {
      condition     = local.pandas_layer.region == var.region
      error_message = "pandas_layer_arn is in ${local.pandas_layer.region} but the stack deploys to ${var.region}: use the layer ARN of ${var.region}."
    }

    precondition {
      condition     = contains([local.pandas_layer_publisher, local.account_id], local.pandas_layer.account)
      error_message = "pandas_layer_arn belongs to account ${local.pandas_layer.account}: only the AWS SDK for pandas publisher (${local.pandas_layer_publisher} in ${var.region}) or this account (${local.account_id}) may provide code that runs inside the Lambdas."
    }

    precondition {
      condition     = local.pandas_layer.account != local.pandas_layer_publisher || local.pandas_layer.name == "AWSSDKPandas-Python312"
      error_message = "pandas_layer_arn names the publisher's layer ${local.pandas_layer.name}; the functions need AWSSDKPandas-Python312 (python3.12, x86_64)."
    }
  }
}
