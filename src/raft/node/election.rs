//! Leader election (§5.2), the election restriction (§5.4.1), PreVote (thesis §9.6) and the
//! role transitions: follower → (pre-)candidate → leader, and back to follower on a higher term.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::RaftNode;
use crate::error::Result;
use crate::raft::role::{Candidate, Follower, Leader, Progress, Role};
use crate::raft::{Envelope, Message, NodeId, RequestVote, RequestVoteResponse, Term};

impl RaftNode {
    /// Becomes a follower of `term` (§5.1: a higher term always wins).
    ///
    /// The election timer keeps running: Figure 2 restarts it only on an AppendEntries from the
    /// current leader or on granting a vote, and the callers that see those do so. Restarting it
    /// on any higher term would let a candidate whose log is too stale to win hold back, again
    /// and again, the nodes that could win. Only a deposed leader, whose timer was stopped, starts
    /// a fresh one.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) -> Result<()> {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.save_hard_state()?;
        }
        if let Role::Leader(leader_state) = &mut self.role {
            self.out.aborted_reads.extend(leader_state.reads.drain(..).map(|r| r.id));
            self.election_elapsed = 0;
            self.reset_election_timeout();
        }
        self.role = Role::Follower(Follower { leader });
        Ok(())
    }

    /// §5.2: increment the term, vote for ourselves, ask every other voter. `transfer`: the
    /// leader asked us to (thesis §3.10), which the RequestVotes say so voters do not ignore them.
    pub(super) fn become_candidate(&mut self) -> Result<()> {
        self.campaign(false)
    }

    pub(super) fn campaign(&mut self, transfer: bool) -> Result<()> {
        self.current_term += 1;
        self.voted_for = Some(self.config.id.clone());
        self.save_hard_state()?;
        self.counters.elections_started += 1;
        self.become_campaigner(false);
        log::info!("{} starts an election for term {}", self.config.id, self.current_term);
        if self.wins_alone() {
            return self.become_leader();
        }
        let request = self.vote_request(false, transfer);
        for peer in self.other_voters() {
            // The vote for ourselves must be durable before anyone can count on it.
            self.send_after_sync(peer, request.clone());
        }
        Ok(())
    }

    /// Thesis §9.6: before disrupting anyone, ask whether a majority would vote for us in the next
    /// term. Nothing is persisted and no term changes; only a successful PreVote round leads to a
    /// real election.
    pub(super) fn become_pre_candidate(&mut self) -> Result<()> {
        self.counters.pre_votes_started += 1;
        self.become_campaigner(true);
        if self.wins_alone() {
            return self.become_candidate();
        }
        let request = self.vote_request(true, false);
        for peer in self.other_voters() {
            let env = Envelope {
                from: self.config.id.clone(),
                to: peer,
                term: self.current_term + 1,
                message: request.clone(),
            };
            self.out.messages.push(env);
        }
        Ok(())
    }

    /// A RequestVote (or PreVote) for our log as it stands.
    fn vote_request(&self, pre_vote: bool, transfer: bool) -> Message {
        Message::RequestVote(RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer,
        })
    }

    /// What both kinds of campaign start with: the candidate role with our own vote, a fresh
    /// randomised timeout, and (if we were leading) the end of reads we can no longer confirm.
    pub(super) fn become_campaigner(&mut self, pre_vote: bool) {
        if let Role::Leader(leader_state) = &mut self.role {
            self.out.aborted_reads.extend(leader_state.reads.drain(..).map(|r| r.id));
        }
        let votes = BTreeSet::from([self.config.id.clone()]);
        self.role = Role::Candidate(Candidate { votes, pre_vote });
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    /// True if this node's own vote is a majority (it is the only voter).
    fn wins_alone(&self) -> bool {
        self.membership().is_some_and(|m| m.has_quorum([&self.config.id]))
    }

    /// True while this node believes a leader is alive: it is the leader, or it heard from one
    /// less than a minimum election timeout ago.
    pub(super) fn heard_from_leader_recently(&self) -> bool {
        match &self.role {
            Role::Leader(_) => true,
            Role::Follower(f) => {
                // With leases on, a node that just started counts as having heard from a
                // leader: before it restarted it may have answered one whose lease still runs.
                let just_started =
                    self.config.lease_ms > 0 && self.ticks < self.config.election_ticks_min;
                (f.leader.is_some() || just_started)
                    && self.election_elapsed < self.config.election_ticks_min
            }
            Role::Candidate(_) => false,
        }
    }

    /// Won the election: set up progress, append a no-op of our term, start replicating (§5.2,
    /// §5.4.2).
    pub(super) fn become_leader(&mut self) -> Result<()> {
        log::info!("{} is leader of term {}", self.config.id, self.current_term);
        let last = self.log.last_index();
        let ticks = self.ticks;
        let progress = self
            .other_members()
            .into_iter()
            .map(|p| (p, Progress::new(last + 1, ticks)))
            .collect::<BTreeMap<_, _>>();
        self.role = Role::Leader(Leader {
            progress,
            seq: 0,
            // Everything written before our candidacy was synced before our RequestVotes left.
            self_match: last,
            term_start: last + 1,
            reads: VecDeque::new(),
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            transfer: None,
            lease_forfeited: false,
        });
        self.append_own_entry(Vec::new())?;
        self.broadcast_append(false)
    }

    /// RequestVote receiver implementation (Figure 2).
    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        req: RequestVote,
    ) -> Result<()> {
        let can_vote = term == self.current_term
            && (self.voted_for.is_none() || self.voted_for.as_ref() == Some(&from));
        let grant = can_vote && self.log.is_up_to_date(req.last_log_index, req.last_log_term);
        if grant {
            self.voted_for = Some(from.clone());
            self.save_hard_state()?;
            // Granting a vote resets the timer (else we might start a competing election).
            self.election_elapsed = 0;
        }
        let resp = Message::RequestVoteResponse(RequestVoteResponse {
            vote_granted: grant,
            pre_vote: false,
        });
        self.send_after_sync(from, resp);
        Ok(())
    }

    /// Votes for a later term while a leader is known to be alive are ignored (see
    /// [`Config::check_quorum`](crate::raft::Config::check_quorum)), so a node that was cut off
    /// or removed cannot depose a working leader.
    pub(super) fn ignores_vote_request(&self, term: Term) -> bool {
        term > self.current_term && self.config.check_quorum && self.heard_from_leader_recently()
    }

    /// A PreVote request (thesis §9.6): would we vote for `from` in `term` (our term + 1)? We
    /// answer without changing our term or our vote, so a PreVote never disrupts anyone.
    pub(super) fn handle_pre_vote(&mut self, from: NodeId, term: Term, req: &RequestVote) {
        let grant = term > self.current_term
            && self.log.is_up_to_date(req.last_log_index, req.last_log_term);
        if !grant {
            self.counters.pre_votes_refused += 1;
        }
        let term = if grant { term } else { self.current_term };
        let message = Message::RequestVoteResponse(RequestVoteResponse {
            vote_granted: grant,
            pre_vote: true,
        });
        self.out.messages.push(Envelope { from: self.config.id.clone(), to: from, term, message });
    }

    pub(super) fn handle_pre_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
    ) -> Result<()> {
        if !granted {
            // A refusal from a later term is news about that term.
            if term > self.current_term {
                self.become_follower(term, None)?;
            }
            return Ok(());
        }
        let quorum = self.quorum();
        let next_term = self.current_term + 1;
        let is_voter = self.membership().is_some_and(|m| m.is_voter(&from));
        let Role::Candidate(candidate) = &mut self.role else {
            return Ok(());
        };
        if candidate.pre_vote && term == next_term && is_voter {
            candidate.votes.insert(from);
            if candidate.votes.len() >= quorum {
                return self.become_candidate();
            }
        }
        Ok(())
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        resp: RequestVoteResponse,
    ) -> Result<()> {
        let quorum = self.quorum();
        // Only the votes of voters count (a learner or a removed node may still answer).
        let is_voter = self.membership().is_some_and(|m| m.is_voter(&from));
        let Role::Candidate(candidate) = &mut self.role else {
            return Ok(());
        };
        if resp.vote_granted && !candidate.pre_vote && is_voter {
            candidate.votes.insert(from);
            if candidate.votes.len() >= quorum {
                return self.become_leader();
            }
        }
        Ok(())
    }
}
