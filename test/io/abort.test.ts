import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { ClientGone, signalOf } from '../../src/io/abort.js';

describe('ClientGone', () => {
  const reason = () => new Error('client went away');

  it('aborts a signal read before the close, with the reason', () => {
    const response = new EventEmitter();
    const gone = new ClientGone(response, reason);
    const signal = gone.signal;
    assert.equal(signal.aborted, false);
    assert.equal(gone.signal, signal, 'one signal, however often read');
    response.emit('close');
    assert.equal(signal.aborted, true);
    assert.match(String(signal.reason), /client went away/);
  });

  it('makes a signal read after the close already aborted', () => {
    const response = new EventEmitter();
    const gone = new ClientGone(response, reason);
    response.emit('close');
    assert.equal(gone.signal.aborted, true);
    assert.match(String(gone.signal.reason), /client went away/);
  });

  it('after release, a close aborts nothing and no listener is left', () => {
    const response = new EventEmitter();
    const gone = new ClientGone(response, reason);
    const signal = gone.signal;
    gone.release();
    assert.equal(response.listenerCount('close'), 0);
    response.emit('close');
    assert.equal(signal.aborted, false);
    const unread = new ClientGone(response, reason);
    unread.release();
    response.emit('close');
    assert.equal(unread.signal.aborted, false);
  });
});

describe('signalOf', () => {
  it('gives a signal as it is, calls a function, and passes undefined on', () => {
    const signal = new AbortController().signal;
    assert.equal(signalOf(signal), signal);
    assert.equal(
      signalOf(() => signal),
      signal,
    );
    assert.equal(signalOf(undefined), undefined);
  });
});
