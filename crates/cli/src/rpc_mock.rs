//! TEMPORARY: the courier::shm RPC API as written in /work/rpc-spec.md, with no bodies, so the
//! demo type-checks before the real one lands on main. Removed at the merge.
#![allow(dead_code, missing_docs, unreachable_pub, clippy::all)]

use std::marker::PhantomData;
use std::time::Duration;

pub use courier::local::Error;
pub use courier::shm::ShmError;

pub trait Wire: Sized + Send + 'static {}
impl Wire for u64 {}
impl<const N: usize> Wire for [u64; N] {}
impl<const N: usize> Wire for courier::flat::String<N> {}
impl Wire for () {}

#[derive(Debug, Default)]
pub struct ServerConfig;
impl ServerConfig {
    pub fn new() -> Self {
        ServerConfig
    }
    pub fn slots(self, _: usize) -> Self {
        self
    }
    pub fn slot_size(self, _: usize) -> Self {
        self
    }
    pub fn push_depth(self, _: usize) -> Self {
        self
    }
}
pub struct Server<Rq, Rp, E>(PhantomData<(Rq, Rp, E)>);
impl<Rq: Wire, Rp: Wire, E: Wire> Clone for Server<Rq, Rp, E> {
    fn clone(&self) -> Self {
        todo!()
    }
}
impl<Rq: Wire, Rp: Wire, E: Wire> Server<Rq, Rp, E> {
    pub fn bind(_name: &str, _config: ServerConfig) -> Result<Self, ShmError> {
        todo!()
    }
    pub fn wait(&self) -> Result<Incoming<Rq, Rp, E>, ShmError> {
        todo!()
    }
    pub fn wait_timeout(&self, _t: Duration) -> Result<Incoming<Rq, Rp, E>, ShmError> {
        todo!()
    }
    pub fn name(&self) -> &str {
        todo!()
    }
}
pub enum Incoming<Rq, Rp, E> {
    Call(Rq, ReplyContext<Rp, E>),
    Scalar(ScalarCall),
    Subscribe(Rq, Notifier),
}
pub struct ReplyContext<Rp, E>(PhantomData<(Rp, E)>);
impl<Rp: Wire, E: Wire> ReplyContext<Rp, E> {
    pub fn reply(self, _rp: Rp) -> Result<(), Error<E>> {
        todo!()
    }
    pub fn fail(self, _e: E) -> Result<(), Error<E>> {
        todo!()
    }
    pub fn is_canceled(&self) -> bool {
        todo!()
    }
    pub fn is_one_way(&self) -> bool {
        todo!()
    }
    pub fn client_pid(&self) -> u32 {
        todo!()
    }
    pub fn lent(&self) -> Option<&[u8]> {
        todo!()
    }
    pub fn lent_mut(&mut self) -> Option<&mut [u8]> {
        todo!()
    }
}
pub struct ScalarCall;
impl ScalarCall {
    pub fn op(&self) -> u32 {
        todo!()
    }
    pub fn args(&self) -> [u64; 4] {
        todo!()
    }
    pub fn is_blocking(&self) -> bool {
        todo!()
    }
    pub fn reply(self, _r: [u64; 2]) -> Result<(), Error<()>> {
        todo!()
    }
}
#[derive(Debug)]
pub enum PushError {
    Unsubscribed,
    ClientGone,
    Full,
    Protocol,
}
pub struct Notifier;
impl Notifier {
    pub fn push<T: Wire>(&self, _value: T) -> Result<(), PushError> {
        todo!()
    }
    pub fn is_subscribed(&self) -> bool {
        todo!()
    }
}
pub struct Client<Rq, Rp, E>(PhantomData<(Rq, Rp, E)>);
impl<Rq: Wire, Rp: Wire, E: Wire> Clone for Client<Rq, Rp, E> {
    fn clone(&self) -> Self {
        todo!()
    }
}
impl<Rq: Wire, Rp: Wire, E: Wire> Client<Rq, Rp, E> {
    pub fn connect(_name: &str, _timeout: Duration) -> Result<Self, ShmError> {
        todo!()
    }
    pub fn req(&self, _rq: Rq) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub fn req_timeout(&self, _rq: Rq, _t: Duration) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub async fn areq(&self, _rq: Rq) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub fn req_async(&self, _rq: Rq) -> Result<WaitReply<Rp, E>, Error<E>> {
        todo!()
    }
    pub fn send(&self, _rq: Rq) -> Result<(), Error<E>> {
        todo!()
    }
    pub fn lend_timeout(&self, _rq: Rq, _buf: &ShmBuf, _t: Duration) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub fn lend_mut_timeout(
        &self,
        _rq: Rq,
        _buf: &mut ShmBuf,
        _t: Duration,
    ) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub fn scalar(&self, _op: u32, _args: [u64; 4]) -> Result<(), Error<E>> {
        todo!()
    }
    pub fn blocking_scalar_timeout(
        &self,
        _op: u32,
        _args: [u64; 4],
        _t: Duration,
    ) -> Result<[u64; 2], Error<E>> {
        todo!()
    }
    pub fn subscribe(&self, _rq: Rq) -> Result<Subscription, Error<E>> {
        todo!()
    }
    pub fn server_pid(&self) -> u32 {
        todo!()
    }
}
pub struct WaitReply<Rp, E>(PhantomData<(Rp, E)>);
#[derive(Debug)]
pub enum CancelOutcome<Rp, E> {
    Withdrawn,
    Signaled,
    Completed(Result<Rp, Error<E>>),
}
impl<Rp: Wire, E: Wire> WaitReply<Rp, E> {
    pub fn wait_timeout(self, _t: Duration) -> Result<Rp, Error<E>> {
        todo!()
    }
    pub fn is_ready(&self) -> bool {
        todo!()
    }
    pub fn cancel(self) -> CancelOutcome<Rp, E> {
        todo!()
    }
}
pub struct Subscription;
impl Subscription {
    pub fn recv_timeout<T: Wire>(&self, _t: Duration) -> Result<T, Error<()>> {
        todo!()
    }
}
pub struct ShmBuf(Vec<u8>);
impl ShmBuf {
    pub fn new(_len: usize) -> Result<ShmBuf, ShmError> {
        todo!()
    }
}
impl std::ops::Deref for ShmBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}
impl std::ops::DerefMut for ShmBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
pub fn services() -> Result<Vec<ServiceInfo>, ShmError> {
    todo!()
}
pub struct ServiceInfo {
    pub name: String,
    pub pid: u32,
    pub clients: u64,
    pub queued: u64,
    pub in_service: u64,
    pub lends: u64,
    pub served: u64,
}
