//! [`Listener`]: a callback fed from a Rust stream until it is stopped.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;

/// A running subscription; `stop()` ends it (also after the client
/// closed, harmlessly).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Listener {
    stopped: Rc<Cell<bool>>,
    wake: Rc<tokio::sync::Notify>,
}

#[wasm_bindgen]
impl Listener {
    /// Stops calling the callback.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify_one();
    }
}

impl Listener {
    /// Runs `task` on the page's event loop until it ends or the listener
    /// is stopped.
    pub(crate) fn spawn(task: impl Future<Output = ()> + 'static) -> Self {
        let stopped = Rc::new(Cell::new(false));
        let wake = Rc::new(tokio::sync::Notify::new());
        let (flag, woken) = (stopped.clone(), wake.clone());
        wasm_bindgen_futures::spawn_local(async move {
            if flag.get() {
                return;
            }
            tokio::select! {
                () = task => {}
                // `notify_one` keeps a permit, so a stop before this
                // point is not missed.
                () = woken.notified() => {}
            }
        });
        Self { stopped, wake }
    }
}

/// Calls `callback` with `arg`; an exception thrown by the app's callback
/// is reported on the console and does not stop the listener.
pub(crate) fn call(callback: &js_sys::Function, arg: &wasm_bindgen::JsValue) {
    if let Err(error) = callback.call1(&wasm_bindgen::JsValue::NULL, arg) {
        web_sys_console_error(&error);
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn web_sys_console_error(value: &wasm_bindgen::JsValue);
}
