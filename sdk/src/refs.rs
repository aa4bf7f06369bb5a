//! Actor references: capabilities to reach an actor, handed from actor to actor.
//!
//! Sending to an actor by name needs a grant for that name in the manifest. An [`ActorRef`] is
//! the other way: a handle the host issued to this instance, standing for one actor. Whoever
//! holds it may send to and call that actor ([`Ctx::send_ref`], [`Ctx::request_ref`]) without a
//! grant for its name, and pass it on by attaching it to a message ([`Ctx::send_attached`],
//! [`Ctx::request_attached`]); the receiver finds it in [`Ctx::attachments`]. So an actor can
//! delegate exactly the access it chooses: "here is the account you may write to", "reply to me
//! here later".
//!
//! A reference cannot be forged: it is a number in a table the host keeps per instance, and a
//! number the instance was not issued is [`ErrorCode::Denied`]. It cannot travel inside a payload
//! either: an `ActorRef` does not serialize, and the bare number means nothing to another
//! instance. Taking a reference ([`Ctx::actor_ref`]) needs the grant to send to the name, except
//! for this actor's own ([`Ctx::self_ref`]). A reference names an address, not an instance: it
//! survives the target's restarts, reaches a virtual actor's next activation, and fails with
//! [`ErrorCode::NoSuchActor`] once the actor is gone. References end with the instance that holds
//! them (at most [`MAX_REFS`](bunraku_abi::MAX_REFS) at a time; [`Ctx::drop_ref`] releases one).
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = u64)]
//! struct Balance {}
//!
//! /// "Ask the account attached to this message for its balance."
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<u64, String>)]
//! struct Audit {}
//!
//! #[derive(Default)]
//! struct Auditor;
//!
//! #[actor]
//! impl Auditor {
//!     #[handler]
//!     async fn audit(&mut self, ctx: &Ctx, _msg: Audit) -> Result<u64, String> {
//!         let account = *ctx.attachments().first().ok_or("no account attached")?;
//!         ctx.request_ref(account, &Balance {}).await.map_err(|e| e.to_string())
//!     }
//! }
//!
//! let mut auditor = TestActor::<Auditor>::start_default();
//! auditor.respond::<Balance>("account/alice", |_| 42);
//! let balance = auditor.attach(&["account/alice"]).call(&Audit {}).unwrap();
//! assert_eq!(balance, Ok(42));
//! // Without a reference, there is nothing to call.
//! assert!(auditor.call(&Audit {}).unwrap().is_err());
//! ```

use bunraku_abi::{ErrorCode, decode_result};

use crate::ctx::{delivered, outbound};
use crate::{Ctx, Error, Message, Request, sys};

/// A reference to an actor: a handle in this instance's reference table. See the
/// [module documentation](crate::refs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorRef(pub(crate) u32);

impl ActorRef {
    /// The host's handle number (meaningful only to this instance).
    pub fn handle(self) -> u32 {
        self.0
    }
}

/// Where a message goes: an actor's name, or a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address<'a> {
    /// An actor's name; needs a grant for it.
    Name(&'a str),
    /// A reference this instance holds; the reference is the grant.
    Ref(ActorRef),
}

impl<'a> From<&'a str> for Address<'a> {
    fn from(name: &'a str) -> Self {
        Self::Name(name)
    }
}

impl<'a> From<&'a String> for Address<'a> {
    fn from(name: &'a String) -> Self {
        Self::Name(name)
    }
}

impl From<ActorRef> for Address<'_> {
    fn from(r: ActorRef) -> Self {
        Self::Ref(r)
    }
}

impl Ctx {
    /// A reference to the actor named `actor`, to attach to messages or send through. Needs the
    /// grant to send to `actor` ([`ErrorCode::Denied`] otherwise); [`ErrorCode::NoSuchActor`]
    /// when there is no such actor.
    pub fn actor_ref(&self, actor: &str) -> Result<ActorRef, Error> {
        let handle = decode_result(sys::actor_ref(actor.as_bytes()))?;
        u32::try_from(handle)
            .map(ActorRef)
            .map_err(|_| Error::new(ErrorCode::Internal, format!("bad handle {handle}")))
    }

    /// A reference to this actor, to hand out (say, where to send results later). Needs no
    /// grant.
    pub fn self_ref(&self) -> Result<ActorRef, Error> {
        self.actor_ref(self.name())
    }

    /// Releases a reference; [`ErrorCode::Invalid`] for one this instance does not hold.
    pub fn drop_ref(&self, r: ActorRef) -> Result<(), Error> {
        decode_result(sys::drop_ref(r.0))?;
        Ok(())
    }

    /// Sends `msg` to the actor `to` stands for, waiting while its mailbox is full.
    pub async fn send_ref<M: Message>(&self, to: ActorRef, msg: &M) -> Result<(), Error> {
        self.send_attached(to, msg, &[]).await
    }

    /// Sends request `msg` to the actor `to` stands for and waits for its reply, as
    /// [`Ctx::request`] does.
    pub async fn request_ref<R: Request>(&self, to: ActorRef, msg: &R) -> Result<R::Reply, Error> {
        self.request_inner(to.into(), msg, None, &[], None).await
    }

    /// Sends `msg` to `to` (a name or a reference) with references attached (at most
    /// [`MAX_ATTACHMENTS`](bunraku_abi::MAX_ATTACHMENTS)); the receiver gets its own references
    /// to the same actors. Attaching a reference keeps it: this instance still holds it.
    pub async fn send_attached<'a, M: Message>(
        &self,
        to: impl Into<Address<'a>>,
        msg: &M,
        refs: &[ActorRef],
    ) -> Result<(), Error> {
        let raw = outbound(to.into(), msg, None, refs, None, |out| {
            sys::send(out, bunraku_abi::mode::WAIT)
        })?;
        if raw == 0 {
            return Ok(());
        }
        delivered(raw).await
    }

    /// Sends request `msg` to `to` (a name or a reference) with references attached, and waits
    /// for its reply.
    pub async fn request_attached<'a, R: Request>(
        &self,
        to: impl Into<Address<'a>>,
        msg: &R,
        refs: &[ActorRef],
    ) -> Result<R::Reply, Error> {
        self.request_inner(to.into(), msg, None, refs, None).await
    }
}
