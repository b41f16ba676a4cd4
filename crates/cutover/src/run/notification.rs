//! What the team is told: one SNS message per outcome, published with `MessageStructure: json`,
//! so that email subscribers read plain text and a chat channel (Amazon Q Developer in chat
//! applications, formerly AWS Chatbot) reads its custom-notification schema: `version` "1.0",
//! `source` "custom", a markdown `content`, and `metadata.threadId` so one release's messages
//! thread together.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

/// One message, in the forms its subscribers read.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subject: String,
    /// For email.
    pub text: String,
    /// For chat channels: the custom-notification event.
    pub chat: Value,
}

impl Notification {
    /// The SNS message for `MessageStructure: json`: the chat event by default, text for email.
    pub fn message(&self) -> String {
        json!({"default": self.chat.to_string(), "email": self.text}).to_string()
    }
}

/// The message for an outcome. `rollback_function` is the switch-listener function a person
/// invokes to roll the service back.
pub fn notification(
    function: Function,
    service: &ServiceName,
    release: Option<&ReleaseId>,
    outcome: &Outcome,
    took: Duration,
    rollback_function: &str,
) -> Notification {
    let (verdict, mark, headline, steps, notes) = match outcome {
        Outcome::Succeeded {
            summary,
            steps,
            notes,
            ..
        } => ("succeeded", "✅", summary.clone(), steps, notes.clone()),
        Outcome::Failed { message, steps } => ("FAILED", "❌", message.clone(), steps, Vec::new()),
        Outcome::Continuing {
            waiting_for, steps, ..
        } => (
            "waiting",
            "⏳",
            format!("waiting for {waiting_for}"),
            steps,
            Vec::new(),
        ),
        Outcome::DryRun {
            summary,
            steps,
            notes,
            ..
        } => ("planned", "📝", summary.clone(), steps, notes.clone()),
    };
    let release_label = release
        .map(|r| format!(" {}", r.short()))
        .unwrap_or_default();
    let subject = format!(
        "cutover: {service}{release_label} {} {verdict}",
        function.as_str()
    );
    let took = format!("{:.1} s", took.as_secs_f64());
    let rollback = format!(
        "aws lambda invoke --function-name {rollback_function} --cli-binary-format raw-in-base64-out \
         --payload '{{\"service\": \"{service}\", \"action\": \"rollback\"}}' /dev/stdout"
    );
    let release_id = release.map(ReleaseId::as_str).unwrap_or("-");

    let mut text = format!(
        "{headline}\n\nservice: {service}\nrelease: {release_id}\nstage: {}\ntook: {took}\n",
        function.as_str()
    );
    let mut description = format!("{headline}\n\n*Took* {took}");
    if !steps.is_empty() {
        text.push_str("\nwhat changed:\n");
        description.push_str("\n*What changed*");
        for step in steps {
            text.push_str(&format!("- {step}\n"));
            description.push_str(&format!("\n• {step}"));
        }
    }
    for note in &notes {
        text.push_str(&format!("\nnote: {note}"));
        description.push_str(&format!("\n_{note}_"));
    }
    text.push_str(&format!("\n\nto roll back: {rollback}\n"));

    let chat = json!({
        "version": "1.0",
        "source": "custom",
        "content": {
            "textType": "client-markdown",
            "title": format!("{mark} {service}{release_label}: {} {verdict}", function.as_str()),
            "description": description,
            "nextSteps": [format!("Roll back in one call: `{rollback}`")],
            "keywords": [service.as_str(), function.as_str(), verdict],
        },
        "metadata": {
            // One release's messages thread together; a sweep's, per service.
            "threadId": format!(
                "cutover-{service}-{}",
                release.map(|r| r.short()).unwrap_or_else(|| "sweep".into())
            ),
            "summary": subject,
            "eventType": format!("cutover.{}.{verdict}", function.as_str()),
            "relatedResources": [service.as_str(), release_id],
            "additionalContext": {
                "service": service.as_str(),
                "release": release_id,
                "stage": function.as_str(),
                "outcome": verdict,
                "took": took,
            },
        },
    });
    Notification {
        subject,
        text,
        chat,
    }
}
