//! [`Completion`]: how the outcome of a connection's write transactions
//! reaches Rust. One JS function, made once per connection, is called by
//! each transaction's `complete`, `error` or `abort` handler
//! ([`js::commit_write`](super::js::commit_write)) with the transaction's
//! number; the awaited number's outcome wakes its [`Outcome`] future. A
//! promise and a `JsFuture` per transaction took two closures (each
//! registered for finalization and released after) and a microtask more.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// What the JS function fills in: the outcome of the transaction awaited.
#[derive(Default)]
struct Slot {
    /// The number of the transaction awaited: the last one numbered.
    awaited: Cell<f64>,
    /// Its outcome once known: the value it completed with, or the error
    /// that failed it.
    outcome: RefCell<Option<Result<JsValue, JsValue>>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn settle(&self, number: f64, completed: bool, value: JsValue) {
        // A transaction whose wait was given up answers no one.
        if number != self.awaited.get() {
            return;
        }
        *self.outcome.borrow_mut() = Some(if completed { Ok(value) } else { Err(value) });
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// The completion callback of one connection's write transactions, which
/// run one at a time.
pub(crate) struct Completion {
    slot: Rc<Slot>,
    /// Called as `(number, completed, value)`.
    callback: Closure<dyn FnMut(f64, bool, JsValue)>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("awaited", &self.slot.awaited.get())
            .finish_non_exhaustive()
    }
}

impl Default for Completion {
    fn default() -> Self {
        let slot = Rc::new(Slot::default());
        let settle = Rc::clone(&slot);
        Self {
            slot,
            callback: Closure::new(move |number, completed, value| {
                settle.settle(number, completed, value);
            }),
        }
    }
}

impl Completion {
    /// The JS function a transaction's handlers call.
    pub(crate) fn callback(&self) -> &js_sys::Function {
        self.callback.as_ref().unchecked_ref()
    }

    /// Numbers the next transaction and awaits its outcome (and no earlier
    /// one's): call before the transaction can complete.
    pub(crate) fn next(&self) -> (f64, Outcome) {
        let number = self.slot.awaited.get() + 1.0;
        self.slot.awaited.set(number);
        self.slot.outcome.borrow_mut().take();
        self.slot.waker.borrow_mut().take();
        (
            number,
            Outcome {
                slot: Rc::clone(&self.slot),
                number,
            },
        )
    }
}

/// The outcome of one numbered transaction: the value it completed with,
/// or the error that failed it.
pub(crate) struct Outcome {
    slot: Rc<Slot>,
    number: f64,
}

impl Future for Outcome {
    type Output = Result<JsValue, JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.slot.awaited.get() != self.number {
            // A later transaction was numbered: this one's wait was given
            // up, and its outcome is no longer kept.
            return Poll::Ready(Err(JsValue::from_str(
                "the wait for this commit was given up",
            )));
        }
        match self.slot.outcome.borrow_mut().take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
