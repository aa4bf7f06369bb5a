//! `stop`: an actor asking to end its own instance (a *normal* exit); `watch` and `unwatch`:
//! a `Down` message when a watched actor's instance ends; `spawn`: a new actor at run time.

use std::sync::Arc;

use bunraku_abi::{Down, DownReason, ErrorCode, Spawn};
use wasmtime::Caller;

use super::{HostResult, fail};
use crate::actor::{ActorState, deliver_down, next_watch_id};
use crate::grants::{Act, permits};

pub(crate) fn stop(caller: Caller<'_, ActorState>) -> HostResult {
    caller.data().cell.request_normal_exit();
    Ok(0)
}

pub(crate) fn watch(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let name = match super::read_name(&caller, ptr, len)? {
        Ok(name) => name,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    if !permits(st, Act::Watch(&name)) {
        return fail(ErrorCode::Denied);
    }
    let id = next_watch_id();
    let mut found = st.host.registry.lookup(&name);
    // An evicted activation refuses the watch: its successor, if any, takes it.
    for _ in 0..8 {
        match found.take() {
            Some(group) if group.watch(id, st.cell.clone()) => {
                st.watches.push((id, group));
                return Ok(id as i64);
            }
            Some(group) => {
                found = st
                    .host
                    .registry
                    .lookup(&name)
                    .filter(|next| !Arc::ptr_eq(next, &group));
            }
            None => break,
        }
    }
    deliver_down(
        &st.host,
        &st.cell,
        Down {
            watch: id,
            actor: name,
            instance: 0,
            reason: DownReason::NoSuchActor,
        },
    );
    Ok(id as i64)
}

pub(crate) fn unwatch(mut caller: Caller<'_, ActorState>, id: u64) -> HostResult {
    let st = caller.data_mut();
    let Some(at) = st.watches.iter().position(|(w, _)| *w == id) else {
        return fail(ErrorCode::Invalid);
    };
    let (_, group) = st.watches.swap_remove(at);
    group.unwatch(id);
    Ok(0)
}

/// Largest `Spawn` accepted (name, module name and configuration).
const MAX_SPAWN: u32 = 64 * 1024;

pub(crate) fn spawn(caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let req: Spawn = match super::read(&caller, ptr, len, MAX_SPAWN as usize)? {
        Ok(req) => req,
        Err(code) => return fail(code),
    };
    let st = caller.data();
    let refuse = |code: ErrorCode, why: &str| {
        st.host.logs.emit(
            &st.cell.name,
            st.cell.instance,
            bunraku_abi::level::WARN,
            &format!(
                "spawn of `{}` from `{}` refused: {why}",
                req.name, req.module
            ),
        );
        fail(code)
    };
    let Some(spawnable) = st
        .host
        .spawnable
        .get(&req.module)
        .map(|e| e.value().clone())
    else {
        return refuse(ErrorCode::NotFound, "no spawnable module has that name");
    };
    if let Err(why) = crate::manifest::validate_actor_name(&req.name) {
        return refuse(ErrorCode::Invalid, &why);
    }
    let config = if req.config.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&req.config) {
            Ok(config) => config,
            Err(e) => return refuse(ErrorCode::Invalid, &format!("config is not JSON: {e}")),
        }
    };
    let mut spec = spawnable.template.clone();
    spec.name = req.name.clone();
    spec.config = config;
    let mut patterns = Vec::new();
    for sub in &spec.subscriptions {
        match crate::subject::Pattern::parse(&sub.pattern) {
            Ok(p) => patterns.push((p, sub.policy)),
            Err(e) => return refuse(ErrorCode::Invalid, &e.to_string()),
        }
    }
    let host = st.host.clone();
    let settings = crate::actor::Settings::of(&spec, spawnable.prepared.clone());
    let module = spawnable.module.clone();
    let group = match host.start_group(&spec.name, &spec, module, settings, patterns) {
        Ok(group) => group,
        Err(crate::DeployError::Duplicate(_)) => {
            return refuse(ErrorCode::AlreadyExists, "the name is taken");
        }
        Err(e) => return refuse(ErrorCode::Invalid, &e.to_string()),
    };
    // Under the spawner's supervisor, with the spawnable's restart type.
    if let Some(link) = st.group.supervisor.get() {
        let child = crate::supervisor::ChildSpec {
            name: req.name.clone(),
            restart: spec.restart_type,
        };
        st.host
            .supervisors
            .add_child(link.supervisor(), child, group);
    }
    tracing::info!(actor = %st.cell.name, spawned = %req.name, module = %req.module, "spawned");
    Ok(0)
}

pub(crate) fn set_status(caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    if len as usize > bunraku_abi::MAX_STATUS_BYTES {
        return fail(ErrorCode::TooLarge);
    }
    let status = super::messaging::read_str(&caller, ptr, len)?;
    let cell = &caller.data().cell;
    if cell.status().as_deref() != Some(status.as_str()) && !status.is_empty() {
        tracing::info!(actor = %cell.name, instance = cell.instance, "status: {status}");
    }
    cell.set_status(&status);
    Ok(0)
}
