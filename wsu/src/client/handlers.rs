//! Client-side event handlers: the typed closures registered on the builder, and the task that
//! runs them one at a time, in arrival order, and answers server requests with their return
//! values.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::shared::{Common, guard};
use super::{ErrorEvent, PresenceEvent, StateEvent, StreamPosition, frames};
use crate::handler::{HandlerError, IntoAck, Reply, decode_payload};
use crate::sync::{BoxFuture, CatchUnwind, panic_message};

/// The dispatcher's view of one handler.
pub(crate) trait ClientHandler: Send + Sync + 'static {
    /// Decodes `data` and starts the handler (a payload that does not decode gives an
    /// `invalid payload` error at once).
    fn call(&self, data: Option<&RawValue>) -> BoxFuture<Reply>;
}

/// A typed handler: `Fn(T) -> impl Future<Output = impl IntoAck>`.
pub(crate) struct Typed<F, T> {
    f: F,
    _payload: PhantomData<fn() -> T>,
}

impl<F, T> Typed<F, T> {
    pub(crate) fn new(f: F) -> Self {
        Typed {
            f,
            _payload: PhantomData,
        }
    }
}

impl<F, Fut, T, R> ClientHandler for Typed<F, T>
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoAck,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, data: Option<&RawValue>) -> BoxFuture<Reply> {
        match decode_payload::<T>(data) {
            Ok(payload) => {
                let fut = (self.f)(payload);
                Box::pin(async move { fut.await.into_ack() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// Called for events without a handler: `(namespace, event, data)`.
pub(crate) type AnyCallback = Box<dyn Fn(&str, &str, Option<&RawValue>) + Send + Sync>;
/// Called with errors nobody awaits.
pub(crate) type ErrorCallback = Box<dyn Fn(ErrorEvent) + Send + Sync>;
/// Called with every state event.
pub(crate) type StateCallback = Box<dyn Fn(&StateEvent) + Send + Sync>;
/// Called with every presence frame.
pub(crate) type PresenceCallback = Box<dyn Fn(&PresenceEvent) + Send + Sync>;

/// The handlers of one namespace, by event.
type EventHandlers = HashMap<Box<str>, Arc<dyn ClientHandler>>;

/// Everything the builder registered.
#[derive(Default)]
pub(crate) struct Callbacks {
    /// Handlers by namespace, then event.
    handlers: HashMap<Box<str>, EventHandlers>,
    pub(crate) on_any: Option<AnyCallback>,
    pub(crate) on_error: Option<ErrorCallback>,
    pub(crate) on_state: Option<StateCallback>,
    pub(crate) on_presence: Option<PresenceCallback>,
}

impl Callbacks {
    /// Registers a handler; false when one already exists for that event.
    pub(crate) fn insert(
        &mut self,
        namespace: &str,
        event: &str,
        handler: Arc<dyn ClientHandler>,
    ) -> bool {
        let events = self.handlers.entry(namespace.into()).or_default();
        if events.contains_key(event) {
            return false;
        }
        events.insert(event.into(), handler);
        true
    }

    fn get(&self, namespace: &str, event: &str) -> Option<&Arc<dyn ClientHandler>> {
        self.handlers.get(namespace)?.get(event)
    }
}

/// An event received from the server, waiting for its handler.
pub(crate) struct IncomingEvent {
    /// The connection it arrived on (its answer is dropped if that connection is gone).
    pub(crate) epoch: u64,
    pub(crate) namespace: Box<str>,
    pub(crate) event: Box<str>,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) ack_id: Option<Box<str>>,
    /// The stream position it carries (a broadcast from a server with recovery), recorded as the
    /// namespace's position once the event is in the handler queue.
    pub(crate) position: Option<StreamPosition>,
}

/// An answer to a server request, tagged with the connection it belongs to.
pub(crate) type Answer = (u64, Utf8Bytes);

/// Runs handlers one at a time in arrival order until the connection task goes away.
///
/// Handlers run here rather than in the connection task, so a handler may await the client's
/// own requests (their answers are read by the connection task meanwhile).
pub(crate) async fn dispatch(
    common: Arc<Common>,
    mut incoming: mpsc::Receiver<IncomingEvent>,
    answers: mpsc::Sender<Answer>,
) {
    while let Some(ev) = incoming.recv().await {
        let outcome = match common.callbacks.get(&ev.namespace, &ev.event) {
            Some(handler) => Some(run(handler, &ev).await),
            None => {
                if let Some(callback) = &common.callbacks.on_any {
                    guard("on_any", || {
                        callback(&ev.namespace, &ev.event, ev.data.as_deref());
                    });
                }
                ev.ack_id
                    .is_some()
                    .then(|| Err(HandlerError::new("unknown event")))
            }
        };
        if let Some(Err(e)) = &outcome {
            // An internal error's detail stays here: the server gets `internal error`.
            if let Some(detail) = std::error::Error::source(e).filter(|_| e.is_internal()) {
                tracing::error!(
                    namespace = %ev.namespace,
                    event = %ev.event,
                    error = %detail,
                    details = ?detail,
                    "a client handler failed with an internal error; the server gets `internal error`"
                );
            }
        }
        let frame = match (outcome, ev.ack_id.as_deref()) {
            (Some(Ok(data)), Some(id)) => {
                frames::ack(&ev.namespace, &ev.event, id, data.as_deref())
            }
            (Some(Err(e)), Some(id)) => {
                frames::error(&ev.namespace, &ev.event, id, e.message(), e.data())
            }
            (Some(Err(error)), None) => {
                common.report_error(ErrorEvent::Handler {
                    namespace: ev.namespace.into(),
                    event: ev.event.into(),
                    error,
                });
                continue;
            }
            (Some(Ok(_)) | None, _) => continue,
        };
        if answers.send((ev.epoch, frame)).await.is_err() {
            break;
        }
    }
}

/// Runs one handler, turning a panic (in the handler, the payload's `Deserialize` or the
/// answer's `Serialize`) into an `internal error` answer, logged with the event.
async fn run(handler: &Arc<dyn ClientHandler>, ev: &IncomingEvent) -> Reply {
    let panicked = |panic: &str| {
        tracing::error!(
            namespace = %ev.namespace,
            event = %ev.event,
            %panic,
            "a client handler panicked"
        );
        Err(HandlerError::new("internal error"))
    };
    let fut = match catch_unwind(AssertUnwindSafe(|| handler.call(ev.data.as_deref()))) {
        Ok(fut) => fut,
        Err(payload) => return panicked(&panic_message(payload.as_ref())),
    };
    match CatchUnwind::new(fut).await {
        Ok(reply) => reply,
        Err(panic) => panicked(&panic),
    }
}
