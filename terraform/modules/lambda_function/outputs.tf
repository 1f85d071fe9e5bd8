output "function_name" {
  description = "The function's name."
  value       = aws_lambda_function.function.function_name
}

output "function_arn" {
  description = "The function's ARN (what a schedule or a permission names)."
  value       = aws_lambda_function.function.arn
}

output "role_name" {
  description = "The function's execution role."
  value       = aws_iam_role.function.name
}

output "dead_letter_queue_url" {
  description = "SQS queue receiving asynchronous events that failed every retry."
  value       = aws_sqs_queue.dead_letters.url
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dead_letters.arn
}
