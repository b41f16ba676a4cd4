//! What the team is told: one SNS message per outcome, published with `MessageStructure: json`,
//! so that email subscribers read plain text and a chat channel (Amazon Q Developer in chat
//! applications, formerly AWS Chatbot) reads its custom-notification schema: `version` "1.0",
//! `source` "custom", a markdown `content`, and `metadata.threadId` so one release's messages
//! thread together.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

/// What an outcome says, in the words the messages use.
struct Told<'a> {
    verdict: &'static str,
    mark: &'static str,
    headline: String,
    steps: &'a [String],
    notes: &'a [String],
}

fn told(outcome: &Outcome) -> Told<'_> {
    let told = |verdict, mark, headline, steps, notes| Told {
        verdict,
        mark,
        headline,
        steps,
        notes,
    };
    match outcome {
        Outcome::Succeeded {
            summary,
            steps,
            notes,
            ..
        } => told("succeeded", "✅", summary.clone(), steps, notes),
        Outcome::Failed { message, steps } => told("FAILED", "❌", message.clone(), steps, &[]),
        Outcome::Continuing {
            waiting_for, steps, ..
        } => told(
            "waiting",
            "⏳",
            format!("waiting for {waiting_for}"),
            steps,
            &[],
        ),
        Outcome::DryRun {
            summary,
            steps,
            notes,
            ..
        } => told("planned", "📝", summary.clone(), steps, notes),
    }
}

/// Whom and what a message is about, for both its forms.
struct About<'a> {
    function: Function,
    service: &'a ServiceName,
    release: Option<&'a ReleaseId>,
    took: String,
    rollback: String,
}

impl About<'_> {
    fn release_id(&self) -> &str {
        self.release.map(ReleaseId::as_str).unwrap_or("-")
    }

    fn release_label(&self) -> String {
        self.release
            .map(|r| format!(" {}", r.short()))
            .unwrap_or_default()
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
    let about = About {
        function,
        service,
        release,
        took: format!("{:.1} s", took.as_secs_f64()),
        rollback: rollback_command(rollback_function, service),
    };
    let told = told(outcome);
    let subject = format!(
        "cutover: {service}{} {} {}",
        about.release_label(),
        function.as_str(),
        told.verdict
    );
    Notification {
        text: text(&about, &told),
        chat: chat_event(&about, &told, &subject),
        subject,
    }
}

/// The one command that rolls the service back, as every message shows it.
fn rollback_command(rollback_function: &str, service: &ServiceName) -> String {
    format!(
        r#"aws lambda invoke --function-name {rollback_function} --cli-binary-format raw-in-base64-out --payload '{{"service": "{service}", "action": "rollback"}}' /dev/stdout"#
    )
}

/// Plain text, for email.
fn text(about: &About, told: &Told) -> String {
    let mut text = format!(
        "{}\n\nservice: {}\nrelease: {}\nstage: {}\ntook: {}\n",
        told.headline,
        about.service,
        about.release_id(),
        about.function.as_str(),
        about.took
    );
    if !told.steps.is_empty() {
        text.push_str("\nwhat changed:\n");
        for step in told.steps {
            text.push_str(&format!("- {step}\n"));
        }
    }
    for note in told.notes {
        text.push_str(&format!("\nnote: {note}"));
    }
    text.push_str(&format!("\n\nto roll back: {}\n", about.rollback));
    text
}

/// The custom-notification event of Amazon Q Developer in chat applications.
fn chat_event(about: &About, told: &Told, subject: &str) -> Value {
    let (service, function, verdict) = (
        about.service.as_str(),
        about.function.as_str(),
        told.verdict,
    );
    let mut description = format!("{}\n\n*Took* {}", told.headline, about.took);
    if !told.steps.is_empty() {
        description.push_str("\n*What changed*");
        for step in told.steps {
            description.push_str(&format!("\n• {step}"));
        }
    }
    for note in told.notes {
        description.push_str(&format!("\n_{note}_"));
    }
    let thread = about
        .release
        .map(|r| r.short())
        .unwrap_or_else(|| "sweep".into());
    json!({
        "version": "1.0",
        "source": "custom",
        "content": {
            "textType": "client-markdown",
            "title": format!("{} {service}{}: {function} {verdict}", told.mark, about.release_label()),
            "description": description,
            "nextSteps": [format!("Roll back in one call: `{}`", about.rollback)],
            "keywords": [service, function, verdict],
        },
        "metadata": {
            // One release's messages thread together; a sweep's, per service.
            "threadId": format!("cutover-{service}-{thread}"),
            "summary": subject,
            "eventType": format!("cutover.{function}.{verdict}"),
            "relatedResources": [service, about.release_id()],
            "additionalContext": {
                "service": service,
                "release": about.release_id(),
                "stage": function,
                "outcome": verdict,
                "took": about.took,
            },
        },
    })
}
